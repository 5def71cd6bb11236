// Load (issue 3, item 9): N clients connected to one plugin server (a child process, so clients and
// server do not share an event loop), then ONE statement creating M tasks; every client must receive
// exactly those M events, each once, in outbox order. Used by test/load.test.ts and bench/load.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import WebSocket from 'ws';

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

/** How to start a {@link ServerProcess}. */
export interface ServerProcessOptions {
  /** A script speaking load-server.ts's lines; default: load-server.ts itself. */
  script?: string;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Node flags before the script, e.g. `--expose-gc`. */
  nodeFlags?: string[];
  /** How long it may take to listen, ms. */
  timeout: number;
}

/** What a server process reports on `stats`. */
export interface ServerStats {
  rss: number;
  heapUsed: number;
  /** Open connections, as the server counts them (the plugin: joined to the hub). */
  connections: number;
}

/** A server of a run in its own process (by default the plugin's, test/helpers/load-server.ts). */
export class ServerProcess {
  readonly #child: ChildProcess;
  readonly #lines: Record<string, unknown>[] = [];
  readonly #waiters = new Set<() => void>();
  #exited = false;
  #stderr = '';
  port = 0;

  private constructor(child: ChildProcess) {
    this.#child = child;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      this.#lines.push(JSON.parse(line) as Record<string, unknown>);
      this.#notify();
    });
    child.stderr?.on('data', (chunk: Buffer) => (this.#stderr = (this.#stderr + chunk.toString()).slice(-4000)));
    child.on('exit', () => {
      this.#exited = true;
      this.#notify();
    });
  }

  /**
   * Starts `script` (default: the plugin server, test/helpers/load-server.ts; the bare-ws reference
   * of bench/ speaks the same lines) and waits until it listens.
   */
  static async start(options: ServerProcessOptions): Promise<ServerProcess> {
    const { script = fileURLToPath(new URL('./load-server.ts', import.meta.url)), env = {}, nodeFlags = [], timeout } = options;
    const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', script], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const server = new ServerProcess(child);
    try {
      server.port = Number((await server.#next((line) => line.ready === true, 'the server to listen', timeout)).port);
    } catch (error) {
      server.kill();
      throw error;
    }
    return server;
  }

  /**
   * When the server handed the last of `events` events, sent from `from` (epoch ms) on, to its
   * sockets; `null` if it did not report them within `timeout`.
   */
  async sentAt(from: number, events: number, timeout: number): Promise<number | null> {
    const flushes = (): { at: number; events: number }[] =>
      this.#lines.map((line) => line.flushed as { at: number; events: number } | undefined).filter((flush) => flush !== undefined && flush.at >= from) as { at: number; events: number }[];
    const sent = (): number => flushes().reduce((sum, flush) => sum + flush.events, 0);
    try {
      await this.#waitFor(() => sent() >= events, `the server to report ${events} events sent`, timeout);
    } catch {
      return null;
    }
    return Math.max(...flushes().map((flush) => flush.at));
  }

  /** Memory and connections now; with `gc`, after a full garbage collection (needs --expose-gc). */
  async stats(gc = false): Promise<ServerStats> {
    return (await this.request(gc ? 'stats gc' : 'stats', 'stats', 10_000)) as unknown as ServerStats;
  }

  /** Writes `command` on the server's stdin; resolves with the `key` of its next line that has one. */
  async request(command: string, key: string, timeout: number): Promise<Record<string, unknown>> {
    const seen = this.#lines.length;
    this.#child.stdin?.write(`${command}\n`);
    const line = await this.#next((line, index) => index >= seen && key in line, key, timeout);
    return line[key] as Record<string, unknown>;
  }

  /** Closes the app and waits for the process to exit; kills it past `timeout`. */
  async close(timeout: number): Promise<void> {
    if (this.#exited) return;
    this.#child.stdin?.end('close\n');
    try {
      await this.#waitFor(() => this.#exited, 'the server to exit', timeout);
    } finally {
      this.kill();
    }
  }

  kill(): void {
    if (!this.#exited) this.#child.kill('SIGKILL');
  }

  async #next(accept: (line: Record<string, unknown>, index: number) => boolean, what: string, timeout: number): Promise<Record<string, unknown>> {
    const find = (): Record<string, unknown> | undefined => this.#lines.find(accept);
    await this.#waitFor(() => find() !== undefined || this.#exited, what, timeout);
    const line = find();
    if (!line) throw new Error(`the load server exited before ${what}: ${this.#stderr}`);
    return line;
  }

  #waitFor(condition: () => boolean, what: string, timeout: number): Promise<void> {
    return waitFor(this.#waiters, condition, what, timeout);
  }

  #notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

/** Resolves when `condition` holds, re-checked whenever a member of `waiters` is called. */
export function waitFor(waiters: Set<() => void>, condition: () => boolean, what: string, timeout: number): Promise<void> {
  if (condition()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!condition()) return;
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}`));
    }, timeout);
    waiters.add(check);
  });
}

/** One lightweight client: it keeps the task ids it received, not the frames. */
interface LoadClient {
  socket: WebSocket;
  taskIds: number[];
  /** Events that are not `task_created` (none are expected). */
  otherEvents: number;
  messages: number;
  closed: boolean;
  /** Whether the last event, written after the statement's, has arrived. */
  sentinel: boolean;
}

/** Mints `count` tokens of alice (environment 1) in one statement; only their hashes are stored. */
export async function issueTokens(pool: pg.Pool, count: number): Promise<string[]> {
  const { rows } = await pool.query<{ token: string }>(
    `WITH minted AS MATERIALIZED (SELECT gen_random_uuid()::text AS token FROM generate_series(1, $1::int)),
     stored AS (INSERT INTO task_events.tokens (token_hash, environment_id, user_id, expires_at)
                SELECT sha256(convert_to(token, 'UTF8')), 1, 1, now() + interval '30 minutes' FROM minted)
     SELECT token FROM minted`,
    [count],
  );
  return rows.map((row) => row.token);
}

/** Compares what each client received with `expected` (task ids in outbox order). */
function check(clients: LoadClient[], expected: number[]): { exact: number; problems: DeliveryProblems } {
  const position = new Map(expected.map((taskId, index) => [taskId, index]));
  const problems: DeliveryProblems = { lost: 0, duplicated: 0, unexpected: 0, outOfOrder: 0, closedEarly: 0 };
  let exact = 0;
  for (const client of clients) {
    const seen = new Uint8Array(expected.length);
    let last = -1;
    let received = 0;
    const before = { ...problems };
    problems.unexpected += client.otherEvents;
    for (const taskId of client.taskIds) {
      const index = position.get(taskId);
      if (index === undefined) problems.unexpected++;
      else if (seen[index]) problems.duplicated++;
      else {
        seen[index] = 1;
        received++;
        if (index < last) problems.outOfOrder++;
        last = index;
      }
    }
    problems.lost += expected.length - received;
    if (client.closed) problems.closedEarly++;
    if (Object.keys(problems).every((key) => problems[key as keyof DeliveryProblems] === before[key as keyof DeliveryProblems])) exact++;
  }
  return { exact, problems };
}

/** Runs one load round; the server process and every client are gone when it returns or throws. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { databaseUrl, clients: count, tasks, connectConcurrency = 200, messageTime, phaseTimeout = 60_000, log = () => {} } = options;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const clients: LoadClient[] = [];
  const waiters = new Set<() => void>();
  const notify = (): void => {
    for (const waiter of [...waiters]) waiter();
  };
  let server: ServerProcess | undefined;
  try {
    server = await ServerProcess.start({
      env: { LOAD_DATABASE_URL: databaseUrl, LOAD_MESSAGE_TIME: messageTime === undefined ? '' : String(messageTime) },
      timeout: phaseTimeout,
    });
    const idle = await server.stats();
    const tokens = await issueTokens(pool, count);
    log(`server on port ${server.port}, rss ${mib(idle.rss)}; connecting ${count} clients`);

    // Connect, at most `connectConcurrency` handshakes at a time.
    const url = `ws://127.0.0.1:${server.port}/ws/events/tasks/?uuid=`;
    let opened = 0;
    // Counted as frames arrive: re-scanning 5,000 clients' events on every frame would be quadratic.
    let completeClients = 0;
    let sentinelId: number | null = null;
    let sentinelReceived = 0;
    let closedClients = 0;
    let failed: Error | null = null;
    const connectStarted = performance.now();
    const connectOne = (token: string): Promise<void> =>
      new Promise((resolve) => {
        const client: LoadClient = { socket: new WebSocket(url + token, { perMessageDeflate: false }), taskIds: [], otherEvents: 0, messages: 0, closed: false, sentinel: false };
        clients.push(client);
        client.socket.on('message', (data) => {
          client.messages++;
          const wasComplete = client.taskIds.length >= tasks;
          for (const event of JSON.parse(String(data)) as { task_id: number; event: string }[]) {
            if (event.event === 'task_created') client.taskIds.push(event.task_id);
            else client.otherEvents++;
            if (event.task_id === sentinelId && !client.sentinel) {
              client.sentinel = true;
              sentinelReceived++;
            }
          }
          if (!wasComplete && client.taskIds.length >= tasks) completeClients++;
          notify();
        });
        client.socket.on('close', () => {
          client.closed = true;
          closedClients++;
          notify();
        });
        client.socket.once('open', () => {
          opened++;
          resolve();
        });
        client.socket.once('error', (error) => {
          failed ??= error;
          resolve();
        });
      });
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(connectConcurrency, count) }, async () => {
        while (next < count && !failed && performance.now() - connectStarted < phaseTimeout) await connectOne(tokens[next++] as string);
      }),
    );
    if (failed) throw new Error(`a client failed to connect after ${opened} opened`, { cause: failed });
    if (opened < count) throw new Error(`only ${opened} of ${count} clients connected within ${phaseTimeout} ms`);
    // Every client open; the server must count them all as joined too.
    let connected = await server.stats();
    const joinDeadline = performance.now() + phaseTimeout;
    while (connected.connections < count && performance.now() < joinDeadline) connected = await server.stats();
    if (connected.connections < count) throw new Error(`the server counts ${connected.connections} of ${count} connections`);
    const connectMs = performance.now() - connectStarted;
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
    const complete = (): number => completeClients;
    const firstComplete = waitFor(waiters, () => complete() > 0, 'the first client to have every event', phaseTimeout).then(() => (firstCompleteAt = performance.now()));
    firstComplete.catch(() => {}); // awaited below, unless the wait for all fails first
    await waitFor(waiters, () => complete() === count || closedClients > 0, 'every client to have every event', phaseTimeout).catch((error: Error) => {
      throw new Error(`${error.message}: ${complete()} of ${count} complete`);
    });
    const allReceivedAt = performance.now();
    const messages = clients.map((client) => client.messages);
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
    sentinelId = Number(sentinel[0]?.id);
    for (const client of clients) client.sentinel = client.taskIds.includes(sentinelId);
    sentinelReceived = clients.filter((client) => client.sentinel).length;
    await waitFor(waiters, () => sentinelReceived >= count - closedClients, 'the sentinel event', phaseTimeout);
    log('every client received a last event written after the statement\'s');
    for (const client of clients) {
      const index = client.taskIds.lastIndexOf(sentinelId);
      if (index !== -1) client.taskIds.splice(index, 1);
    }
    const { exact, problems } = check(clients, expected);
    return {
      clients: count,
      tasks,
      connectMs: round(connectMs),
      statementMs: round(committedAt - statementStarted),
      commitToServerSentMs: serverSentAt === null ? null : serverSentAt - committedEpoch,
      commitToFirstCompleteMs: round(firstCompleteAt - committedAt),
      commitToAllReceivedMs: round(allReceivedAt - committedAt),
      messagesPerClient: { min: Math.min(...messages), max: Math.max(...messages) },
      serverRss: { idle: idle.rss, connected: connected.rss, after: after.rss },
      clientRss: process.memoryUsage().rss,
      exact,
      problems,
    };
  } finally {
    for (const client of clients) client.socket.terminate();
    await server?.close(30_000).catch(() => {});
    await pool.end();
    log('clients and server closed');
  }
}

function round(ms: number): number {
  return Math.round(ms);
}

/** Bytes as MiB, for progress lines. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
