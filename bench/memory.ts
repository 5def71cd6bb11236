// Memory per idle connection (issue 4): the server process's RSS with N clients connected (ours:
// authenticated and joined to the hub) minus its RSS before any connection, divided by N; the
// reference is a bare `ws` server (bench/reference-server.ts) with as many clients. Each server
// runs alone, in a process of its own started with --expose-gc, and is measured after a full
// collection and a settle pause; the heap's share per connection is reported too.
//
//   npm run bench:memory [-- --connections 8000 --concurrency 200 --settle 2000]
//
// Runs against a fresh database on TEST_DATABASE_URL (or DATABASE_URL), dropped after; with neither
// set, a throwaway embedded PostgreSQL. Writes JSON to bench/results/ (git-ignored).
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { ClientPool } from '../harness/client-pool.js';
import { issueTokens } from '../harness/db.js';
import type { ServerStats } from '../harness/lines.js';
import { startLoadServer } from '../harness/load.js';
import type { ServerProcess } from '../harness/server-process.js';
import { startReferenceServer } from './counting.js';
import { isMain, runStandalone } from './standalone.js';
import { positive, type BenchRow } from './support.js';

const PHASE_TIMEOUT = 120_000;
const KB = 1024;

/** What {@link run} measures. */
export interface MemoryOptions {
  /** A database with our migrations and the reference schema (see withBenchDatabase). */
  databaseUrl: string;
  /** Clients on each server; default 8,000. */
  connections?: number;
  /** Handshakes in flight at once; default 200. */
  concurrency?: number;
  /** Pause between a full collection and the reading, ms; default 2,000. */
  settle?: number;
  log?: (line: string) => void;
}

/** One server's readings, bytes, and what they make per connection, KB. */
export interface ServerMemory {
  before: ServerStats;
  connected: ServerStats;
  /** From the first handshake to every client open (and, ours, joined). */
  connectMs: number;
  rssPerConnectionKB: number;
  heapUsedPerConnectionKB: number;
}

/** Both servers' readings. */
export interface MemoryDetail {
  connections: number;
  reference: ServerMemory;
  ours: ServerMemory;
}

/** Stats after a full collection, a pause, and another one (what a collection frees is returned lazily). */
async function settled(server: ServerProcess, settle: number): Promise<ServerStats> {
  await server.stats(true);
  await sleep(settle);
  return server.stats(true);
}

/** Starts a server, reads it idle, connects a client on each of `urls()`, reads it again. */
async function measureServer(start: () => Promise<ServerProcess>, urls: (server: ServerProcess) => Promise<string[]>, options: Required<MemoryOptions>): Promise<ServerMemory> {
  const { connections, concurrency, settle } = options;
  const server = await start();
  let clients: ClientPool | undefined;
  try {
    const before = await settled(server, settle);
    const addresses = await urls(server);
    const connectStarted = performance.now();
    // Idle clients: nothing is sent to them, nothing to hook.
    clients = await ClientPool.connect(addresses, { concurrency, timeout: PHASE_TIMEOUT, skipUTF8Validation: true });
    await server.untilConnections(connections, PHASE_TIMEOUT);
    const connectMs = Math.round(performance.now() - connectStarted);
    const connected = await settled(server, settle);
    return {
      before,
      connected,
      connectMs,
      rssPerConnectionKB: (connected.rss - before.rss) / connections / KB,
      heapUsedPerConnectionKB: (connected.heapUsed - before.heapUsed) / connections / KB,
    };
  } finally {
    clients?.close();
    await server.shutdown(30_000);
  }
}

/** The bare ws server, then ours, each alone on the machine with its clients. */
export async function measure(options: MemoryOptions): Promise<{ rows: BenchRow[]; detail: MemoryDetail }> {
  const resolved: Required<MemoryOptions> = { connections: 8000, concurrency: 200, settle: 2000, log: () => {}, ...options };
  const { databaseUrl, connections, log } = resolved;
  const gc = ['--expose-gc'];
  const reference = await measureServer(
    () => startReferenceServer(PHASE_TIMEOUT, gc),
    async (server) => Array.from({ length: connections }, () => `ws://127.0.0.1:${server.port}/`),
    resolved,
  );
  log(`bare ws: ${reference.rssPerConnectionKB.toFixed(1)} KB RSS per connection; connected in ${reference.connectMs} ms`);
  const database = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  try {
    const ours = await measureServer(
      () => startLoadServer(databaseUrl, { nodeFlags: gc, timeout: PHASE_TIMEOUT }),
      async (server) => (await issueTokens(database, connections)).map((token) => server.url(token)),
      resolved,
    );
    log(`ours: ${ours.rssPerConnectionKB.toFixed(1)} KB RSS per connection; connected in ${ours.connectMs} ms`);
    const row: BenchRow = {
      name: `memory per idle authenticated connection, ${connections.toLocaleString('en-US')} connections (server RSS)`,
      unit: 'KB',
      ours: round(ours.rssPerConnectionKB),
      reference: { label: 'bare ws', value: round(reference.rssPerConnectionKB) },
      target: { kind: 'at-most', value: 20 },
    };
    return { rows: [row], detail: { connections, reference, ours } };
  } finally {
    await database.end();
  }
}

function round(kb: number): number {
  return Math.round(kb * 10) / 10;
}

/** The memory row: ours per connection against a bare ws server's. */
export async function run(options: MemoryOptions): Promise<BenchRow[]> {
  return (await measure(options)).rows;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { connections: { type: 'string' }, concurrency: { type: 'string' }, settle: { type: 'string' } } });
  const connections = positive('connections', values.connections, 8000);
  const concurrency = positive('concurrency', values.concurrency, 200);
  const settle = positive('settle', values.settle, 2000);
  runStandalone('memory', { connections, concurrency, settle }, (databaseUrl, log) => measure({ databaseUrl, connections, concurrency, settle, log }));
}
