// The default one-time token store (lib/tokens.ts) on the migrated database.
import t from 'tap';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { createTestDatabase } from '../harness/db.js';
import { isTokenShaped, TokenStore } from '../lib/tokens.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const db = await createTestDatabase(t, { schema: false });
const { pool } = db;
const store = new TokenStore(pool, 60_000);

/** Moves a token's expiry `seconds` into the past (negative) or future. */
async function expireIn(token: string, seconds: number): Promise<void> {
  const { rowCount } = await pool.query(
    `UPDATE task_events.tokens SET expires_at = now() + make_interval(secs => $2)
     WHERE token_hash = sha256(convert_to(lower($1), 'UTF8'))`, [token, seconds]);
  if (rowCount !== 1) throw new Error(`token ${token} is not stored under its SHA-256`);
}

/** Waits (with a deadline) until the database's clock is past the token's expiry. */
async function untilDatabaseClockPasses(token: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await pool.query(
      `SELECT clock_timestamp() > expires_at AS past FROM task_events.tokens
       WHERE token_hash = sha256(convert_to(lower($1), 'UTF8'))`, [token]);
    if (rows[0]?.past) return;
    if (Date.now() > deadline) throw new Error(`token ${token} did not expire within ${timeoutMs} ms`);
  }
}

t.test('issue returns a UUID v4, stored with its identity and a ttl from now', async (t) => {
  const token = await store.issue({ environmentId: 1, userId: 7 });
  t.match(token, UUID_V4);
  const { rows } = await pool.query(
    `SELECT environment_id::int, user_id::int, used_at,
            extract(epoch FROM expires_at - now()) BETWEEN 55 AND 60 AS ttl_from_now
     FROM task_events.tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
  t.strictSame(rows, [{ environment_id: 1, user_id: 7, used_at: null, ttl_from_now: true }]);
});

t.test('issue refuses an identity that is not two integers', async (t) => {
  await t.rejects(store.issue({ environmentId: 1.5, userId: 7 }), TypeError);
  await t.rejects(store.issue({ environmentId: 1, userId: Number.NaN }), TypeError);
  await t.rejects(store.issue({ environmentId: '1', userId: 7 } as never), TypeError);
});

t.test('consume returns the identity once, then null', async (t) => {
  const token = await store.issue({ environmentId: 2, userId: 9 });
  t.strictSame(await store.consume(token), { environmentId: 2, userId: 9 });
  t.equal(await store.consume(token), null);
  t.equal(await store.consume(token), null);
});

t.test('consume accepts the token in upper case, as isTokenShaped does', async (t) => {
  const token = await store.issue({ environmentId: 1, userId: 1 });
  t.strictSame(await store.consume(token.toUpperCase()), { environmentId: 1, userId: 1 });
  t.equal(await store.consume(token), null);
});

t.test('an expired token returns null', async (t) => {
  const token = await store.issue({ environmentId: 1, userId: 1 });
  await expireIn(token, -1);
  t.equal(await store.consume(token), null);

  const shortLived = new TokenStore(pool, 1);
  const tiny = await shortLived.issue({ environmentId: 1, userId: 1 });
  const { rows } = await pool.query(
    `SELECT expires_at - created_at AS ttl FROM task_events.tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [tiny]);
  t.same(rows[0].ttl, { milliseconds: 1 }, 'a 1 ms ttl is stored as 1 ms');
  await untilDatabaseClockPasses(tiny);
  t.equal(await shortLived.consume(tiny), null, 'a 1 ms token is expired once the ms has passed');
});

t.test('an unknown token returns null', async (t) => {
  t.equal(await store.consume(randomUUID()), null);
  t.equal(await store.consume('not-a-token'), null);
});

t.test('the clear token value appears nowhere in task_events.tokens', async (t) => {
  const token = await store.issue({ environmentId: 1, userId: 3 });
  const unconsumed = await store.issue({ environmentId: 1, userId: 4 });
  await store.consume(token);
  const forms = [token, unconsumed].flatMap((value) => [value, value.replaceAll('-', '')]);

  const { rows: columns } = await pool.query(
    `SELECT column_name FROM information_schema.columns
     WHERE table_schema = 'task_events' AND table_name = 'tokens' ORDER BY ordinal_position`);
  t.strictSame(columns.map((c) => c.column_name), ['token_hash', 'environment_id', 'user_id', 'created_at', 'expires_at', 'used_at']);
  for (const { column_name: column } of columns) {
    const { rows } = await pool.query(`SELECT ${pg.escapeIdentifier(column)}::text AS value FROM task_events.tokens`);
    const text = rows.map((r) => String(r.value)).join('\n').toLowerCase();
    for (const form of forms) t.notOk(text.includes(form), `${column} does not hold ${form}`);
  }
  const { rows } = await pool.query('SELECT t::text AS row FROM task_events.tokens t');
  t.ok(rows.length >= 2);
  const table = rows.map((r) => r.row as string).join('\n').toLowerCase();
  for (const form of forms) t.notOk(table.includes(form), `no row holds ${form}`);
  // Nor any other table of ours (outbox, versions, pruning marks, whatever a migration adds later).
  const { rows: tables } = await pool.query<{ name: string }>(
    `SELECT format('%I.%I', table_schema, table_name) AS name FROM information_schema.tables
     WHERE table_schema = 'task_events' AND table_type = 'BASE TABLE' ORDER BY 1`);
  t.ok(tables.length > 1, `${tables.length} tables of task_events scanned`);
  for (const { name } of tables) {
    const { rows: all } = await pool.query(`SELECT t::text AS row FROM ${name} t`);
    const text = all.map((r) => r.row as string).join('\n').toLowerCase();
    for (const form of forms) t.notOk(text.includes(form), `${name} does not hold ${form}`);
  }
});

t.test('two concurrent consume calls of the same token: exactly one wins', async (t) => {
  // A second pool and store, as a second instance of the server would have.
  const otherPool = new pg.Pool({ connectionString: db.url, max: 4 });
  t.teardown(() => otherPool.end());
  const other = new TokenStore(otherPool, 60_000);
  for (let round = 0; round < 20; round++) {
    const token = await store.issue({ environmentId: 1, userId: round });
    const results = await Promise.all([store.consume(token), other.consume(token), store.consume(token)]);
    const winners = results.filter((identity) => identity !== null);
    t.strictSame(winners, [{ environmentId: 1, userId: round }], `round ${round}`);
  }
});

t.test('prune deletes expired tokens only', async (t) => {
  await pool.query('DELETE FROM task_events.tokens');
  const valid = await store.issue({ environmentId: 1, userId: 1 });
  const used = await store.issue({ environmentId: 1, userId: 2 });
  await store.consume(used);
  const justExpired = await store.issue({ environmentId: 1, userId: 3 });
  await expireIn(justExpired, -10);
  const longExpired = await store.issue({ environmentId: 1, userId: 4 });
  await expireIn(longExpired, -120);

  const remaining = async (): Promise<number[]> => (await pool.query(
    'SELECT user_id::int FROM task_events.tokens ORDER BY user_id')).rows.map((r) => r.user_id);
  t.equal(await store.prune(), 1, 'the default grace of 60 s keeps a token that expired 10 s ago');
  t.strictSame(await remaining(), [1, 2, 3]);
  t.equal(await store.prune(0), 1);
  t.strictSame(await remaining(), [1, 2], 'valid tokens stay, used or not');
  t.equal(await store.prune(0), 0);
  t.strictSame(await store.consume(valid), { environmentId: 1, userId: 1 }, 'a pruned-around token still works');
});

t.test('isTokenShaped accepts randomUUID() output and rejects everything else', async (t) => {
  for (let i = 0; i < 100; i++) {
    const token = randomUUID();
    if (!isTokenShaped(token) || !isTokenShaped(token.toUpperCase())) t.fail(`rejected ${token}`);
  }
  t.pass('100 random UUIDs, either case');
  const v4 = randomUUID();
  const rejected: unknown[] = [
    '', 'garbage', 'not-a-uuid-at-all-but-36-characters!', v4.replaceAll('-', ''), `{${v4}}`, `${v4}\n`, ` ${v4}`,
    `${v4}0`, v4.slice(1), v4.replace(/[0-9a-f]$/, 'g'),
    '00000000-0000-0000-0000-000000000000', // nil
    '6ba7b810-9dad-11d1-80b4-00c04fd430c8', // v1
    'a3bb189e-8bf9-3888-9912-ace4e6543002', // v3
    '21f7f8de-8051-5b89-8680-0195ef798b6a', // v5
    '0190a5b2-7b6c-7d3e-8f01-23456789abcd', // v7
    '6ba7b810-9dad-41d1-c0b4-00c04fd430c8', // version 4, variant bits not RFC 4122
    123, 0n, null, undefined, {}, [v4], Buffer.from(v4), new String(v4), Symbol(v4), () => v4,
  ];
  for (const value of rejected) t.equal(isTokenShaped(value), false, `rejects ${typeof value} ${String(value).slice(0, 40)}`);
});
