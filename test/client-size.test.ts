// The client ships to browsers: small, and free of Node built-ins.
import t from 'tap';
import { build } from 'esbuild';
import { readdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

/** The budget for `client/index.ts`, bundled, minified and gzipped. */
const SIZE_LIMIT = 5120;

const clientDirectory = new URL('../client/', import.meta.url);

const bundle = async (): Promise<string> => {
  const result = await build({
    entryPoints: [new URL('index.ts', clientDirectory).pathname],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'neutral',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0]?.text ?? '';
};

t.test('the client, minified and gzipped, is at most 5 KB', async (t) => {
  const code = await bundle();
  const gzipped = gzipSync(code, { level: 9 }).length;
  t.comment(`client: ${code.length} bytes minified, ${gzipped} bytes gzipped (limit ${SIZE_LIMIT})`);
  t.ok(gzipped <= SIZE_LIMIT, `${gzipped} bytes gzipped`);
});

t.test('the client imports nothing: no Node built-ins, no packages, nothing from lib/', async (t) => {
  // platform 'neutral' resolves no Node built-in: a `node:` import would fail the build.
  const code = await bundle();
  t.notMatch(code, /\bimport\s*[("'{*]|\brequire\s*\(|\bnode:/, 'the bundle imports and requires nothing');
  for (const file of readdirSync(clientDirectory).filter((name) => name.endsWith('.ts'))) {
    const source = readFileSync(new URL(file, clientDirectory), 'utf8');
    const imports = [...source.matchAll(/^(?:import|export)\s[^;]*?from\s+'([^']+)'/gm)].map((match) => match[1]);
    t.ok(imports.every((specifier) => /^\.\/[\w-]+\.js$/.test(specifier ?? '')), `${file} imports only from client/: ${imports.join(', ') || 'nothing'}`);
    t.notMatch(source, /\brequire\s*\(|['"]node:/, `${file} names no Node built-in`);
  }
});
