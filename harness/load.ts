// Load (issue 3, item 9): N clients connected to one plugin server (a child process, so clients and
// server do not share an event loop), then ONE statement creating M tasks; every client must receive
// exactly those M events, each once, in outbox order. Used by test/load.test.ts and bench/load.ts.
import pg from 'pg';
import { ClientPool, openClients } from './client-pool.js';
import { Conditions } from './conditions.js';
import { issueTokens } from './db.js';
import { LIFECYCLE_EVENTS, type PluginStats } from './lines.js';
import { ServerProcess } from './server-process.js';

/** What one run does. */
export interface LoadOptions {
  /** A database with our migrations and the reference schema (triggers attached). */
  databaseUrl: string;
  clients: number;
  tasks: number;
  /** Handshakes in flight at once (the plugin's pool has 10 connections; more only queue). */
  connectConcurrency?: number;
  /** The plugin's messageTime; unset: its default. */
  messageTime?: number;
  /** Deadline of each phase (server start, connecting, delivery), ms. */
  phaseTimeout?: number;
  /** Progress lines (the bench prints them; the test does not). */
  log?: (line: string) => void;
}

/** Delivery errors summed over all clients; a correct run is all zeros. */
export interface DeliveryProblems {
  /** Expected events a client never received. */
  lost: number;
  /** Events a client received more than once. */
  duplicated: number;
  /** Events a client should not have received at all. */
  unexpected: number;
  /** Events received before one that was created earlier. */
  outOfOrder: number;
  /** Clients closed before the end of the run. */
  closedEarly: number;
}

/** What one run measured. */
export interface LoadResult {
  clients: number;
  tasks: number;
  /** From the first handshake to all clients open (and joined, as the server counts them). */
  connectMs: number;
  /** How long the INSERT took, to its commit. */
  statementMs: number;
  /** From the commit to the server's last send call for them (its fan-out, without the clients' parsing). */
  commitToServerSentMs: number | null;
  /** From the commit to the first client having all events. */
  commitToFirstCompleteMs: number;
  /** From the commit to every client having all events. */
  commitToAllReceivedMs: number;
  /** Messages (frames) each client needed for the events: fewest and most. */
  messagesPerClient: { min: number; max: number };
  /** Resident memory of the server process: idle, with the clients connected, after the delivery. */
  serverRss: { idle: number; connected: number; after: number };
  /** Resident memory of the clients' process after the delivery. */
  clientRss: number;
  /** Clients that received exactly the statement's events, each once, in order. */
  exact: number;
  problems: DeliveryProblems;
}

/**
 * The plugin server for many clients of one user from one address (a load test, not an attack:
 * no connection caps, no rate limit), reporting each message it sends (`flushed`, for sentAt)
 * and any further `events` of the plugin (e.g. `caught-up`, one per outbox read).
 */
export function startLoadServer(
  databaseUrl: string,
  options: { messageTime?: number; nodeFlags?: readonly string[]; events?: readonly string[]; timeout: number },
): Promise<ServerProcess<PluginStats>> {
  const { messageTime, nodeFlags, events = [], timeout } = options;
  const plugin = { connectionString: databaseUrl, maxConnectionsPerUser: 0, maxConnectionsPerIp: 0, maxConnections: 0, ...(messageTime !== undefined && { messageTime }) };
  return ServerProcess.startPlugin({ plugin, events: [...LIFECYCLE_EVENTS, 'flushed', ...events] }, { nodeFlags, timeout });
}

/** What one client received: the task ids of its `task_created` events, in order; the rest counted. */
interface ClientLog {
  taskIds: number[];
  /** Events that are not `task_created` (none are expected). */
  otherEvents: number;
  messages: number;
  closed: boolean;
  /** Whether the last event, written after the statement's, has arrived. */
  sentinel: boolean;
}

/**
 * What every client received. Completions are counted as frames arrive: re-scanning 5,000
 * clients' events on every frame would be quadratic.
 */
class Received {
  readonly clients: ClientLog[];
  readonly conditions = new Conditions();
  complete = 0;
  closedClients = 0;
  sentinelReceived = 0;
  #sentinelId: number | null = null;

  constructor(clients: number, readonly tasks: number) {
    this.clients = Array.from({ length: clients }, () => ({ taskIds: [], otherEvents: 0, messages: 0, closed: false, sentinel: false }));
  }

  frame = (index: number, frame: Buffer): void => {
    const client = this.clients[index] as ClientLog;
    client.messages++;
    const wasComplete = client.taskIds.length >= this.tasks;
    for (const event of JSON.parse(String(frame)) as { task_id: number; event: string }[]) {
      if (event.event === 'task_created') client.taskIds.push(event.task_id);
      else client.otherEvents++;
      if (event.task_id === this.#sentinelId && !client.sentinel) this.#sawSentinel(client);
    }
    if (!wasComplete && client.taskIds.length >= this.tasks) this.complete++;
    this.conditions.check();
  };

  close = (index: number): void => {
    (this.clients[index] as ClientLog).closed = true;
    this.closedClients++;
    this.conditions.check();
  };

  /** From now on, `taskId` is the sentinel: counted where it already arrived, and as it arrives. */
  expectSentinel(taskId: number): void {
    this.#sentinelId = taskId;
    for (const client of this.clients) if (client.taskIds.includes(taskId)) this.#sawSentinel(client);
  }

  /** Takes the sentinel out of what the clients received (its last copy: extra ones still count). */
  dropSentinel(): void {
    for (const { taskIds } of this.clients) {
      const index = taskIds.lastIndexOf(this.#sentinelId as number);
      if (index !== -1) taskIds.splice(index, 1);
    }
  }

  #sawSentinel(client: ClientLog): void {
    client.sentinel = true;
    this.sentinelReceived++;
  }
}

/** Compares what each client received with `expected` (task ids in outbox order). */
function check(clients: readonly ClientLog[], expected: number[]): { exact: number; problems: DeliveryProblems } {
  const position = new Map(expected.map((taskId, index) => [taskId, index]));
  const problems: DeliveryProblems = { lost: 0, duplicated: 0, unexpected: 0, outOfOrder: 0, closedEarly: 0 };
  let exact = 0;
  for (const client of clients) {
    const seen = new Uint8Array(expected.length);
    let last = -1;
    let count = 0;
    const before = { ...problems };
    problems.unexpected += client.otherEvents;
    for (const taskId of client.taskIds) {
      const index = position.get(taskId);
      if (index === undefined) problems.unexpected++;
      else if (seen[index]) problems.duplicated++;
      else {
        seen[index] = 1;
        count++;
        if (index < last) problems.outOfOrder++;
        last = index;
      }
    }
    problems.lost += expected.length - count;
    if (client.closed) problems.closedEarly++;
    if (Object.keys(problems).every((key) => problems[key as keyof DeliveryProblems] === before[key as keyof DeliveryProblems])) exact++;
  }
  return { exact, problems };
}

/** Runs one load round; the server process and every client are gone when it returns or throws. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { databaseUrl, clients: count, tasks, connectConcurrency = 200, messageTime, phaseTimeout = 60_000, log = () => {} } = options;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const received = new Received(count, tasks);
  let server: ServerProcess<PluginStats> | undefined;
  let clients: ClientPool | undefined;
  try {
    server = await startLoadServer(databaseUrl, { messageTime, timeout: phaseTimeout });
    const idle = await server.stats();
    const tokens = await issueTokens(pool, count);
    log(`server on port ${server.port}, rss ${mib(idle.rss)}; connecting ${count} clients`);

    // Every client open, and counted as joined by the server.
    const connectStarted = performance.now();
    clients = await openClients(server, tokens, { concurrency: connectConcurrency, timeout: phaseTimeout, onFrame: received.frame, onClose: received.close });
    const connectMs = performance.now() - connectStarted;
    const connected = await server.stats();
    log(`${count} clients connected in ${(connectMs / 1000).toFixed(2)} s; server rss ${mib(connected.rss)}`);

    // ONE statement, one transaction, `tasks` events.
    const { rows: markRows } = await pool.query<{ id: string }>('SELECT coalesce(max(id), 0) AS id FROM task_events.outbox');
    const mark = Number(markRows[0]?.id);
    const statementStarted = performance.now();
    const statementStartedEpoch = Date.now();
    await pool.query(`INSERT INTO tasks (environment_id, object_class_id, name) SELECT 1, 1 + n % 3, 'load ' || n FROM generate_series(1, $1::int) n`, [tasks]);
    const committedAt = performance.now();
    const committedEpoch = Date.now();
    let firstCompleteAt = 0;
    const { conditions } = received;
    const firstComplete = conditions.waitFor(() => received.complete > 0, 'the first client to have every event', phaseTimeout).then(() => (firstCompleteAt = performance.now()));
    firstComplete.catch(() => {}); // awaited below, unless the wait for all fails first
    await conditions.waitFor(() => received.complete === count || received.closedClients > 0, 'every client to have every event', phaseTimeout).catch((error: Error) => {
      throw new Error(`${error.message}: ${received.complete} of ${count} complete`);
    });
    const allReceivedAt = performance.now();
    const messages = received.clients.map((client) => client.messages);
    // Lines from the server process may be read after the clients' frames: wait for them.
    const serverSentAt = await server.sentAt(statementStartedEpoch, tasks, 10_000);
    await firstComplete;
    const after = await server.stats();
    log(`all ${count} clients received ${tasks} events ${((allReceivedAt - committedAt) / 1000).toFixed(2)} s after the commit; server rss ${mib(after.rss)}`);

    const { rows } = await pool.query<{ task_id: string }>('SELECT task_id FROM task_events.outbox WHERE id > $1 ORDER BY id', [mark]);
    const expected = rows.map((row) => Number(row.task_id));
    if (expected.length !== tasks) throw new Error(`the statement wrote ${expected.length} outbox rows, not ${tasks}`);
    // A last event, after the statement's: whatever a client receives before it counts (extra copies too).
    const { rows: sentinel } = await pool.query<{ id: string }>(`INSERT INTO tasks (environment_id, object_class_id, name) VALUES (1, 1, 'sentinel') RETURNING id`);
    received.expectSentinel(Number(sentinel[0]?.id));
    await conditions.waitFor(() => received.sentinelReceived >= count - received.closedClients, 'the sentinel event', phaseTimeout);
    log('every client received a last event written after the statement\'s');
    received.dropSentinel();
    const { exact, problems } = check(received.clients, expected);
    return {
      clients: count,
      tasks,
      connectMs: Math.round(connectMs),
      statementMs: Math.round(committedAt - statementStarted),
      commitToServerSentMs: serverSentAt === null ? null : serverSentAt - committedEpoch,
      commitToFirstCompleteMs: Math.round(firstCompleteAt - committedAt),
      commitToAllReceivedMs: Math.round(allReceivedAt - committedAt),
      messagesPerClient: { min: Math.min(...messages), max: Math.max(...messages) },
      serverRss: { idle: idle.rss, connected: connected.rss, after: after.rss },
      clientRss: process.memoryUsage().rss,
      exact,
      problems,
    };
  } finally {
    clients?.close();
    await server?.shutdown(30_000);
    await pool.end();
    log('clients and server closed');
  }
}

/** Bytes as MiB, for progress lines. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
