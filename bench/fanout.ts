// Fan-out (issue 4; v2: issue 11): "commit → every client has the 1,000 events", the plugin against
// a bare `ws` server broadcasting one pre-serialized 1,000-event array (bench/reference-server.ts),
// at each number of clients, in the same run, rounds interleaved. Both servers run in processes of
// their own; the clients live here and only count events (bench/counting.ts), the same for all.
// - reference: from telling the bare server `send` to the last client having the whole message;
// - ours: from the return of one autocommitted `INSERT … SELECT generate_series` of 1,000 tasks
//   (the plugin is woken by its commit) to the last client having all 1,000 events;
// - ours, v2: the same with as many v2 clients (subprotocol task-events.v2: each message an
//   events frame with its cursor) on the same plugin server, in environment 2, so that each round's
//   statement reaches one kind of client only: its tasks are environment 2's, the v1 clients'
//   environment 1's. The v2 clients count the events of the frame's array; ready and cursor frames
//   carry none.
// Each figure is the median of `--rounds` rounds, after one round that warms all three up.
//
//   npm run bench:fanout [-- --clients 1000,4000 --rounds 5 --concurrency 200]
//
// Runs against a fresh database on TEST_DATABASE_URL (or DATABASE_URL), dropped after; with neither
// set, a throwaway embedded PostgreSQL. Writes JSON to bench/results/ (git-ignored).
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { ClientPool, openClients, wallClock, type ClientPoolOptions } from '../harness/client-pool.js';
import { issueTokens } from '../harness/db.js';
import { startLoadServer } from '../harness/load.js';
import type { ServerProcess } from '../harness/server-process.js';
import { EventCounter, startReferenceServer } from './counting.js';
import { isMain, runStandalone } from './standalone.js';
import { median, positive, type BenchRow } from './support.js';
import { eventsArray, frameType, tokensOf, V2, v2Url } from './v2.js';

/**
 * Ours at most this many times the bare broadcast (issue 14); at 1,000 clients and fewer, where
 * the fixed cost between the commit and the first send (the outbox read) weighs most against a
 * short broadcast, {@link TARGET_AT_1000}.
 */
const TARGET = 1.15;
const TARGET_AT_1000 = 1.2;

/** Events per round: the plugin's messageLimit, so its batch goes out at once. */
const EVENTS = 1000;
const PHASE_TIMEOUT = 120_000;

/** Each round's statement: the v1 clients' tasks (environment 1), the v2 clients' (environment 2, its class 4). */
const STATEMENTS = {
  v1: `INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'fan-out ' || n FROM generate_series(1, $1::int) n RETURNING id`,
  v2: `INSERT INTO tasks (environment_id, object_class_id, name) SELECT 2, 4, 'fan-out v2 ' || n FROM generate_series(1, $1::int) n RETURNING id`,
};

/** The three kinds of round, in the order of a round's turn (rotated each round). */
const KINDS = ['reference', 'ours', 'oursV2'] as const;
type Kind = (typeof KINDS)[number];

/** What {@link run} measures. */
export interface FanoutOptions {
  /** A database with our migrations and the reference schema (see withBenchDatabase). */
  databaseUrl: string;
  /** Numbers of clients, one pair of rows each; default 1,000 and 4,000. */
  clients?: readonly number[];
  /** Measured rounds per size (after one warm-up round); default 5. */
  rounds?: number;
  /** Handshakes in flight at once; default 200. */
  concurrency?: number;
  log?: (line: string) => void;
}

/**
 * Every round's times, ms, per number of clients: to the last client having every event, and to
 * the server's last send call (the rest is the clients' reading).
 */
export interface FanoutDetail {
  sizes: {
    clients: number;
    referenceMs: number[];
    oursMs: number[];
    oursV2Ms: number[];
    referenceServerSentMs: (number | null)[];
    oursServerSentMs: (number | null)[];
    oursV2ServerSentMs: (number | null)[];
  }[];
}

/** Throws unless each sampled client received `events` events of the expected shape (and ids, when given). */
function checkSamples(counter: EventCounter, events: number, taskIds: readonly number[] | null): void {
  const expected = taskIds && [...taskIds].sort((a, b) => a - b).join();
  for (const sample of counter.samples()) {
    const received = sample as { task_id?: unknown; event?: unknown; timestamp?: unknown }[];
    if (received.length !== events) throw new Error(`a sampled client parsed ${received.length} events, ${events} expected`);
    if (!received.every((event) => typeof event.task_id === 'number' && event.event === 'task_created' && typeof event.timestamp === 'string')) {
      throw new Error('a sampled client received an event of another shape');
    }
    if (expected && received.map((event) => event.task_id as number).sort((a, b) => a - b).join() !== expected) {
      throw new Error('a sampled client received other tasks than the statement created');
    }
  }
}

/** One round's times, ms: to every client having the events, and to the server's last send call. */
interface Round {
  ms: number;
  serverSentMs: number | null;
}

/** One round of the reference: `send`, then every client has the message. */
async function referenceRound(server: ServerProcess, counter: EventCounter): Promise<Round> {
  let sentMs: number | null = null;
  const ms = await counter.round(EVENTS, PHASE_TIMEOUT, async () => {
    const startedAt = wallClock();
    const startedEpoch = Date.now();
    const sent = await server.request('send', {}, PHASE_TIMEOUT);
    sentMs = Number(sent.at) - startedEpoch;
    return startedAt;
  });
  checkSamples(counter, EVENTS, null);
  return { ms, serverSentMs: sentMs };
}

/** One round of ours: one statement creating EVENTS tasks, then every client has their events. */
async function ourRound(server: ServerProcess, database: pg.Pool, counter: EventCounter, statement: string): Promise<Round> {
  let taskIds: number[] = [];
  let startedEpoch = 0;
  let committedEpoch = 0;
  const ms = await counter.round(EVENTS, PHASE_TIMEOUT, async () => {
    startedEpoch = Date.now();
    const { rows } = await database.query<{ id: string }>(statement, [EVENTS]);
    const committedAt = wallClock();
    committedEpoch = Date.now();
    taskIds = rows.map((row) => Number(row.id));
    return committedAt;
  });
  checkSamples(counter, EVENTS, taskIds);
  const sentAt = await server.sentAt(startedEpoch, EVENTS, 10_000);
  return { ms, serverSentMs: sentAt === null ? null : sentAt - committedEpoch };
}

/**
 * A v2 client's frames as the counter takes v1 messages: an events frame's array (the same bytes);
 * ready and cursor frames hold no event; anything else goes to the counter as it is (and fails it).
 */
function v2Events(counter: EventCounter): (client: number, frame: Buffer, receivedAt: number) => void {
  return (client, frame, receivedAt) => {
    const events = eventsArray(frame);
    if (events) return counter.frame(client, events, receivedAt);
    const type = frameType(frame);
    if (type !== 'ready' && type !== 'cursor') counter.frame(client, frame, receivedAt);
  };
}

/** Both servers up; for each size, clients on both (v1 and v2 on ours), then rounds rotating which goes first. */
export async function measure(options: FanoutOptions): Promise<{ rows: BenchRow[]; detail: FanoutDetail }> {
  const { databaseUrl, clients: sizes = [1000, 4000], rounds = 5, concurrency = 200, log = () => {} } = options;
  const database = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const servers: ServerProcess[] = [];
  const detail: FanoutDetail = { sizes: [] };
  try {
    const reference = await startReferenceServer(PHASE_TIMEOUT);
    servers.push(reference);
    // Default messageTime (5 s): 1,000 events fill messageLimit, so the message leaves at once.
    const ours = await startLoadServer(databaseUrl, { timeout: PHASE_TIMEOUT });
    servers.push(ours);
    for (const size of sizes) {
      const counters: Record<Kind, EventCounter> = { reference: new EventCounter(size), ours: new EventCounter(size), oursV2: new EventCounter(size) };
      const counting = (counter: EventCounter): ClientPoolOptions => ({
        concurrency, timeout: PHASE_TIMEOUT, onFrame: counter.frame, onClose: counter.closed, skipUTF8Validation: true,
      });
      const referenceUrl = `ws://127.0.0.1:${reference.port}/`;
      const referenceClients = await ClientPool.connect(Array.from({ length: size }, () => referenceUrl), counting(counters.reference));
      const opened: ClientPool[] = [referenceClients];
      try {
        // Resolves once the server counts them all as joined.
        opened.push(await openClients(ours, await issueTokens(database, size), counting(counters.ours)));
        const v2Urls = (await tokensOf(ours, 2, size)).map((token) => v2Url(ours, token));
        opened.push(await ClientPool.connect(v2Urls, { ...counting(counters.oursV2), onFrame: v2Events(counters.oursV2), protocol: V2 }));
        // Resolves once the server counts the v2 clients joined too.
        await ours.untilConnections(2 * size, PHASE_TIMEOUT);
        log(`${size} clients on the bare server; ${size} v1 and ${size} v2 clients on ours`);
        const times: FanoutDetail['sizes'][number] = {
          clients: size, referenceMs: [], oursMs: [], oursV2Ms: [], referenceServerSentMs: [], oursServerSentMs: [], oursV2ServerSentMs: [],
        };
        for (let round = 0; round <= rounds; round++) {
          const order = [...KINDS.slice(round % KINDS.length), ...KINDS.slice(0, round % KINDS.length)];
          for (const which of order) {
            const { ms, serverSentMs } =
              which === 'reference' ? await referenceRound(reference, counters.reference)
              : await ourRound(ours, database, counters[which], which === 'ours' ? STATEMENTS.v1 : STATEMENTS.v2);
            if (round > 0) {
              times[`${which}Ms`].push(Math.round(ms));
              times[`${which}ServerSentMs`].push(serverSentMs);
            }
            log(`${size} clients, ${round ? `round ${round}` : 'warm-up'}: ${which} ${Math.round(ms)} ms (server's last send call at ${serverSentMs} ms)`);
            await sleep(200);
          }
        }
        detail.sizes.push(times);
      } finally {
        for (const clients of opened) clients.close();
      }
    }
  } finally {
    await Promise.all(servers.map((server) => server.shutdown(30_000)));
    await database.end();
  }
  return { rows: [...detail.sizes.map((size) => row(size, 'ours')), ...detail.sizes.map((size) => row(size, 'oursV2'))], detail };
}

function row(size: FanoutDetail['sizes'][number], which: 'ours' | 'oursV2'): BenchRow {
  const clients = `${size.clients.toLocaleString('en-US')}${which === 'oursV2' ? ' v2' : ''} clients`;
  return {
    name: `fan-out, ${clients}: commit → all have ${EVENTS.toLocaleString('en-US')} events`,
    unit: 'ms',
    ours: median(size[`${which}Ms`]),
    reference: { label: 'bare ws broadcast', value: median(size.referenceMs) },
    target: { kind: 'ratio-at-most', value: size.clients <= 1000 ? TARGET_AT_1000 : TARGET },
  };
}

/** The fan-out rows: ours (v1, then v2 clients) against the bare-ws broadcast, one per number of clients. */
export async function run(options: FanoutOptions): Promise<BenchRow[]> {
  return (await measure(options)).rows;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { clients: { type: 'string' }, rounds: { type: 'string' }, concurrency: { type: 'string' } } });
  const clients = (values.clients ?? '1000,4000').split(',').map((size) => positive('clients', size.trim(), 0));
  const rounds = positive('rounds', values.rounds, 5);
  const concurrency = positive('concurrency', values.concurrency, 200);
  runStandalone('fanout', { clients, rounds, concurrency }, (databaseUrl, log) => measure({ databaseUrl, clients, rounds, concurrency, log }));
}
