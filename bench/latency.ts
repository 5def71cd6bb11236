// `npm run bench:latency [-- --seconds 30 --clients 1000 --rate 20]`: commit → client latency
// (issue 4). `clients` clients on one plugin server (a process of its own, messageTime 5000) while a
// writer (a process of its own, bench/latency-writer.ts) commits `rate` single-row UPDATEs a second
// for `seconds`, each its own autocommit statement, and notes each commit time as soon as the
// statement returns. The writes are sequential, so each makes exactly one event and every client
// must receive them all in the order written: a client's k-th event is the k-th write (checked by
// its task id), and its latency is the frame's arrival minus that write's commit. p50/p99/max are
// over all (client, write) pairs. Target: p99 ≤ messageTime + 250 ms, messages being batched by
// design (one every messageTime since the last). Run by itself, against a fresh database on
// TEST_DATABASE_URL (or DATABASE_URL; else an embedded PostgreSQL), dropped after; the JSON goes to
// bench/results/ (git-ignored).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { openClients, type ClientPool } from '../harness/client-pool.js';
import { Conditions } from '../harness/conditions.js';
import { issueTokens } from '../harness/db.js';
import { startLoadServer } from '../harness/load.js';
import type { ServerProcess } from '../harness/server-process.js';
import type { Write, WriterData } from './latency-writer.js';
import { isMain, runStandalone } from './standalone.js';
import { positive, type BenchRow } from './support.js';

/** The plugin's default, which the target is stated in. */
const MESSAGE_TIME = 5000;
const ALLOWANCE = 250;
/** Tasks the writer picks from. */
const TASKS = 1000;
/** Deadline of starting the server and connecting the clients, ms. */
const PHASE_TIMEOUT = 120_000;

/** What one run does. */
interface Settings {
  seconds: number;
  clients: number;
  /** Writes per second. */
  rate: number;
}

const DEFAULTS: Settings = { seconds: 30, clients: 1000, rate: 20 };

/** What {@link run} measures; unset: {@link DEFAULTS}. */
export interface LatencyOptions extends Partial<Settings> {
  /** A database with our migrations and the reference schema (see withBenchDatabase); its tasks table gets 1,000 more rows. */
  databaseUrl: string;
  log?: (line: string) => void;
}

/** What one run measured; latencies in ms, over every (client, write) pair received. */
export interface LatencyResult extends Settings {
  writes: number;
  /** How long the writes took (the achieved rate is writes / this). */
  writeSeconds: number;
  connectMs: number;
  samples: number;
  p50: number;
  p99: number;
  max: number;
  min: number;
  /** Pairs never received; events whose task was not the write's; events past the writes; clients closed. */
  problems: { lost: number; mismatched: number; unexpected: number; closedEarly: number };
}

/**
 * Every client's events, as arrays of `clients × writes`: where the client's k-th event is, its
 * task id and its arrival time.
 */
export class Deliveries {
  readonly counts: Int32Array;
  readonly taskIds: Int32Array;
  readonly arrivals: Float64Array;
  readonly conditions = new Conditions();
  complete = 0;
  unexpected = 0;
  closed = 0;

  constructor(readonly clients: number, readonly writes: number) {
    this.counts = new Int32Array(clients);
    this.taskIds = new Int32Array(clients * writes);
    this.arrivals = new Float64Array(clients * writes);
  }

  received = (client: number, frame: Buffer, receivedAt: number): void => {
    let count = this.counts[client] as number;
    for (const event of JSON.parse(frame.toString()) as { task_id: number; event: string }[]) {
      if (count === this.writes || event.event !== 'task_value_changed') {
        this.unexpected++;
        continue;
      }
      this.taskIds[client * this.writes + count] = event.task_id;
      this.arrivals[client * this.writes + count] = receivedAt;
      if (++count === this.writes) this.complete++;
    }
    this.counts[client] = count;
    this.conditions.check();
  };

  closedEarly = (): void => {
    this.closed++;
    this.conditions.check();
  };
}

/** Creates the tasks to write to (before the server starts: their events are no one's). */
export async function createTasks(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'task ' || n FROM generate_series(1, $1::int) n RETURNING id`,
    [TASKS],
  );
  return rows.map((row) => Number(row.id));
}

/** Runs the writer process to its end; resolves with the writes in commit order. `onWrite` is told of each as it is committed. */
export function runWriter(data: WriterData, onWrite: (written: number) => void = () => {}): Promise<{ writes: Write[]; seconds: number }> {
  return new Promise((resolve, reject) => {
    const writes: Write[] = [];
    let seconds: number | null = null;
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./latency-writer.ts', import.meta.url))], {
      env: { ...process.env, LATENCY_WRITER: JSON.stringify(data) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const message = JSON.parse(line) as Write | { done: true; seconds: number };
      if ('done' in message) seconds = message.seconds;
      else onWrite(writes.push(message));
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (seconds !== null) resolve({ writes, seconds });
      else reject(new Error(`the writer exited (${code}) after ${writes.length} writes`));
    });
  });
}

/** The q-quantile of sorted samples (nearest rank). */
function quantile(sorted: Float64Array, q: number): number {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] as number;
}

/** Joins each client's k-th event to the k-th write: latencies and what went wrong. */
export function join(deliveries: Deliveries, writes: Write[]): Pick<LatencyResult, 'samples' | 'p50' | 'p99' | 'max' | 'min' | 'problems'> {
  const latencies = new Float64Array(deliveries.clients * writes.length);
  let samples = 0;
  let mismatched = 0;
  for (let client = 0; client < deliveries.clients; client++) {
    const base = client * deliveries.writes;
    for (let k = 0; k < (deliveries.counts[client] as number); k++) {
      const write = writes[k] as Write;
      if (deliveries.taskIds[base + k] !== write.taskId) mismatched++;
      latencies[samples++] = (deliveries.arrivals[base + k] as number) - write.committedAt;
    }
  }
  const sorted = latencies.subarray(0, samples).sort();
  const round = (ms: number): number => Math.round(ms * 10) / 10;
  return {
    samples,
    p50: round(quantile(sorted, 0.5)),
    p99: round(quantile(sorted, 0.99)),
    max: round(sorted[samples - 1] ?? NaN),
    min: round(sorted[0] ?? NaN),
    problems: { lost: deliveries.clients * writes.length - samples, mismatched, unexpected: deliveries.unexpected, closedEarly: deliveries.closed },
  };
}

/**
 * One run: the row and what it measured. Rejects when any client missed an event, got a wrong one
 * or was closed (such a run's latency means nothing), after logging what it measured.
 */
export async function measure(options: LatencyOptions): Promise<{ rows: BenchRow[]; detail: LatencyResult }> {
  const { databaseUrl, log = () => {}, ...given } = options;
  const settings = { ...DEFAULTS, ...given };
  const { seconds, clients, rate } = settings;
  const writeCount = seconds * rate;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  let server: ServerProcess | undefined;
  let clientPool: ClientPool | undefined;
  let detail: LatencyResult;
  try {
    const taskIds = await createTasks(pool);
    server = await startLoadServer(databaseUrl, { messageTime: MESSAGE_TIME, timeout: PHASE_TIMEOUT });
    const deliveries = new Deliveries(clients, writeCount);
    const connectStarted = performance.now();
    const tokens = await issueTokens(pool, clients);
    clientPool = await openClients(server, tokens, { concurrency: 200, timeout: PHASE_TIMEOUT, onFrame: deliveries.received, onClose: deliveries.closedEarly });
    const connectMs = Math.round(performance.now() - connectStarted);
    log(`${clients} clients connected in ${(connectMs / 1000).toFixed(1)} s; writing ${rate}/s for ${seconds} s`);
    const written = await runWriter({ databaseUrl, taskIds, writes: writeCount, rate });
    log(`${written.writes.length} writes in ${written.seconds.toFixed(1)} s; waiting for the last message`);
    // The last write's message is due within messageTime; a client short of it by then has lost events.
    await deliveries.conditions
      .waitFor(() => deliveries.complete + deliveries.closed >= clients, 'every client to have every event', MESSAGE_TIME + 10_000)
      .catch((error: Error) => log(error.message));
    detail = { ...settings, writes: writeCount, writeSeconds: written.seconds, connectMs, ...join(deliveries, written.writes) };
  } finally {
    clientPool?.close();
    await server?.shutdown(30_000);
    await pool.end();
  }
  log(`latency over ${detail.samples.toLocaleString('en-US')} (client, event) pairs: p50 ${detail.p50} ms, p99 ${detail.p99} ms, max ${detail.max} ms (min ${detail.min} ms)`);
  const { lost, mismatched, unexpected, closedEarly } = detail.problems;
  if (lost + mismatched + unexpected + closedEarly > 0) {
    log(JSON.stringify(detail));
    throw new Error(`delivery incomplete: ${lost} lost, ${mismatched} mismatched, ${unexpected} unexpected, ${closedEarly} clients closed`);
  }
  return { rows: benchRows(detail), detail };
}

function benchRows(result: LatencyResult): BenchRow[] {
  const bound = MESSAGE_TIME + ALLOWANCE;
  return [
    {
      name: `commit → client latency, p99 (${result.clients.toLocaleString('en-US')} clients, ${result.rate} writes/s)`,
      unit: 'ms',
      ours: result.p99,
      reference: { label: `messageTime + ${ALLOWANCE} ms`, value: bound },
      target: { kind: 'at-most', value: bound },
    },
  ];
}

/** The latency row: p99 against messageTime + 250 ms. */
export async function run(options: LatencyOptions): Promise<BenchRow[]> {
  return (await measure(options)).rows;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { seconds: { type: 'string' }, clients: { type: 'string' }, rate: { type: 'string' } } });
  const settings = {
    seconds: positive('seconds', values.seconds, DEFAULTS.seconds),
    clients: positive('clients', values.clients, DEFAULTS.clients),
    rate: positive('rate', values.rate, DEFAULTS.rate),
  };
  runStandalone('latency', settings, (databaseUrl, log) => measure({ databaseUrl, log, ...settings }));
}
