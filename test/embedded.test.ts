// The embedded PostgreSQL run as root from a directory user `postgres` cannot traverse (a checkout
// in `mktemp -d` or /root): the binaries are copied where it can reach them, the data goes under
// /var/tmp, a wrong password is refused, and the server has a process group of its own, so a
// terminal's Ctrl-C reaches only our process.
import { existsSync } from 'node:fs';
import { chmod, cp, lstat, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { CACHE_ROOT, findBinaries, postgresUser, reachable } from '../example/embedded-binaries.js';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../example/embedded.js';

/** Field 5 of /proc/<pid>/stat: the process group (after the command, which may hold spaces). */
async function processGroup(pid: number | 'self'): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

/** The server's pid, from the first line of postmaster.pid. */
async function serverPid(database: EmbeddedDatabase): Promise<number> {
  return Number((await readFile(join(database.dataDirectory, 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

const runAs = postgresUser();
if (!runAs || process.platform !== 'linux') {
  t.plan(0, 'skipped: needs root on Linux (PostgreSQL then runs as user postgres, who cannot reach a 0700 directory)');
} else {
  // A checkout in a 0700 directory: node_modules (a copy of the binaries) and the data both in it.
  const closed = await mkdtemp(join(tmpdir(), 'task-events-closed-'));
  t.teardown(() => rm(closed, { recursive: true, force: true }));
  const packageNative = dirname(dirname((await findBinaries(undefined)).postgres));
  const nativeDir = join(closed, 'native');
  await cp(packageNative, nativeDir, { recursive: true, verbatimSymlinks: true });

  t.test('the setup is out of reach of user postgres', async (t) => {
    t.equal((await stat(closed)).mode & 0o777, 0o700);
    t.notOk(reachable(join(nativeDir, 'bin', 'postgres'), runAs), 'the binaries');
  });

  t.test('binaries out of reach are copied once, symlinks and modes kept, then reused', async (t) => {
    const cacheRoot = await mkdtemp('/var/tmp/task-events-test-cache-');
    t.teardown(() => rm(cacheRoot, { recursive: true, force: true }));
    await chmod(cacheRoot, 0o755);
    const first = await findBinaries(runAs, nativeDir, cacheRoot);
    t.ok(first.copied, 'copied');
    t.comment(`copied the binaries (${nativeDir}) in ${first.copied?.ms} ms`);
    t.ok(first.postgres.startsWith(`${cacheRoot}/postgres-`), first.postgres);
    t.ok(reachable(first.postgres, runAs), 'user postgres can run the copy');
    t.equal((await stat(first.postgres)).mode & 0o777, 0o755, 'bin/postgres keeps its mode');
    t.ok((await lstat(join(dirname(dirname(first.postgres)), 'lib', 'libpq.so.5'))).isSymbolicLink(), 'lib/libpq.so.5 is still a symlink');
    t.equal((await stat(dirname(dirname(first.postgres)))).mode & 0o777, 0o755, 'the copy\'s directory is open to others');
    const second = await findBinaries(runAs, nativeDir, cacheRoot);
    t.equal(second.copied, undefined, 'not copied again');
    t.equal(second.postgres, first.postgres);
  });

  t.test('a throwaway cluster in a closed directory: runs from /var/tmp, asks for the password, is deleted by stop()', async (t) => {
    const started = Date.now();
    const database = await startEmbeddedPostgres({ databaseDir: join(closed, 'throwaway'), persistent: false, nativeDir });
    t.comment(`started (initdb included) in ${Date.now() - started} ms; ${database.notices.join('; ')}`);
    t.teardown(() => database.stop());
    t.ok(database.dataDirectory.startsWith(`${CACHE_ROOT}/`), `data in ${database.dataDirectory}`);
    t.match(database.notices.join('\n'), /is not reachable by user postgres/);
    t.match(database.url, /^postgres:\/\/postgres:password@127\.0\.0\.1:\d+\/postgres$/);

    t.same(await query(database.url, 'SELECT current_user AS who'), [{ who: 'postgres' }]);
    const wrong = new URL(database.url);
    wrong.password = 'not-the-password';
    await t.rejects(query(wrong.toString(), 'SELECT 1'), { code: '28P01' }, 'a wrong password is refused');

    const listener = new pg.Client({ connectionString: database.url });
    await listener.connect();
    const notified = new Promise<string | undefined>((resolve) => listener.once('notification', (message) => resolve(message.payload)));
    await listener.query('LISTEN embedded_test');
    await query(database.url, `NOTIFY embedded_test, 'hello'`);
    t.equal(await notified, 'hello', 'LISTEN/NOTIFY');
    await listener.end();

    const pid = await serverPid(database);
    t.not(await processGroup(pid), await processGroup('self'), 'a process group other than ours: a terminal\'s Ctrl-C does not reach it');
    t.equal(await processGroup(pid), pid, 'a group of its own');

    await query(database.url, 'CREATE TABLE kept (value text); INSERT INTO kept VALUES (\'before the restart\')');
    await database.restart();
    t.same(await query(database.url, 'SELECT value FROM kept'), [{ value: 'before the restart' }], 'restart keeps the data');

    const restartedPid = await serverPid(database);
    await database.stop();
    t.notOk(alive(restartedPid), 'stop() stops the server');
    t.notOk(existsSync(database.dataDirectory), 'and deletes the throwaway directory');
  });

  t.test('a kept cluster in a closed directory lives under /var/tmp and is found again by the next start', async (t) => {
    const requested = join(closed, '.data', 'postgres');
    let second: EmbeddedDatabase | undefined;
    const first = await startEmbeddedPostgres({ databaseDir: requested, persistent: true, nativeDir });
    t.teardown(async () => {
      await first.stop();
      await second?.stop();
      await rm(first.dataDirectory, { recursive: true, force: true });
    });
    t.match(first.dataDirectory, new RegExp(`^${CACHE_ROOT}/data-[0-9a-f]{12}$`));
    t.same(first.notices.filter((notice) => notice.includes('data kept in')), [
      `embedded PostgreSQL data kept in ${first.dataDirectory} (${requested} is not reachable by user postgres)`,
    ]);
    const owner = await stat(first.dataDirectory);
    t.same({ uid: owner.uid, mode: owner.mode & 0o777 }, { uid: runAs.uid, mode: 0o700 }, 'owned by postgres, closed to others');
    await query(first.url, 'CREATE TABLE kept (value text); INSERT INTO kept VALUES (\'first run\')');
    await first.stop();
    t.ok(existsSync(join(first.dataDirectory, 'PG_VERSION')), 'stop() keeps a kept cluster');

    second = await startEmbeddedPostgres({ databaseDir: requested, persistent: true, nativeDir });
    t.equal(second.dataDirectory, first.dataDirectory);
    t.same(await query(second.url, 'SELECT value FROM kept'), [{ value: 'first run' }], 'the data of the first run');
  });
}
