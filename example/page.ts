// The example's live page (`GET /`): example/public/ served as it is, its script bundled with
// esbuild when the app starts. The script imports `fastify-task-events/client`, which resolves,
// as in any app that installs the package, to the built client in dist/client/ (`npm install`
// builds it). Everything comes from this server: the Content-Security-Policy says so to the browser.
import { build } from 'esbuild';
import type { FastifyInstance } from 'fastify';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const PUBLIC = new URL('./public/', import.meta.url);

/** Same origin only: no CDN, no inline script or style, WebSocket back to this host. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

/** Served files by path: their type and where the body comes from. */
const FILES = {
  '/': { type: 'text/html; charset=utf-8', file: 'index.html' },
  '/page.css': { type: 'text/css; charset=utf-8', file: 'page.css' },
  '/favicon.svg': { type: 'image/svg+xml', file: 'favicon.svg' },
} as const;

/** The page's script and the modules it imports (the client among them), as one ES module. */
async function bundleScript(): Promise<string> {
  const result = await build({
    entryPoints: [fileURLToPath(new URL('page.ts', PUBLIC))],
    bundle: true,
    format: 'esm',
    target: 'es2022',
    platform: 'browser',
    write: false,
    logLevel: 'silent',
  }).catch((error: Error) => {
    throw new Error('could not bundle example/public/page.ts; is dist/client/ built? (npm run build)', { cause: error });
  });
  const [output] = result.outputFiles;
  if (!output) throw new Error('esbuild wrote no bundle of example/public/page.ts');
  return output.text;
}

/** One bundle a process: an app built again (the tests build many) reuses it. */
let script: Promise<string> | undefined;

/** `GET /` (the page), `/page.js`, `/page.css` and `/favicon.svg`; read once, at registration. */
export async function page(app: FastifyInstance): Promise<void> {
  script ??= bundleScript();
  script.catch(() => (script = undefined)); // a failed bundle is not kept: the next app tries again
  const bodies = new Map<string, { type: string; body: string }>([['/page.js', { type: 'text/javascript; charset=utf-8', body: await script }]]);
  for (const [path, { type, file }] of Object.entries(FILES)) {
    bodies.set(path, { type, body: await readFile(new URL(file, PUBLIC), 'utf8') });
  }
  for (const [path, { type, body }] of bodies) {
    app.get(path, async (_request, reply) => reply
      .type(type)
      .header('content-security-policy', CONTENT_SECURITY_POLICY)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      // A restarted server may serve a new page: the browser never runs a stale one.
      .header('cache-control', 'no-cache')
      .send(body));
  }
}
