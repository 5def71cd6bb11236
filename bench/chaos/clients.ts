// The chaos run's protocol v1 clients: some stay as long as their instance does (and connect
// again when it is restarted), the rest come and go at random (with and without filters, some
// leaving politely, some dropping the connection); now and then thirty connect at once (a
// reconnect storm), or one stops reading. Each goes to whichever instance is up. Every client is
// checked with the delivery checker of harness/delivery/: one that has gone as soon as it has
// (so its frames need not be kept), the others at the end of the run.
//
// v1 promises nothing across a connection, so a client whose instance was restarted under it is
// owed nothing past what it received: a deploy sends what it had read and closes with 1001, but
// what was committed and not yet read is not sent; a crash loses what the process had read and
// not yet sent. What such a client did receive is still checked in full (nothing twice, nothing
// foreign or early, each writer's rows in order and without a hole before the last one received).
import type pg from 'pg';
import { TestClient } from '../../harness/client.js';
import { checkDelivery, type ClientReport, type OutboxRow } from '../../harness/delivery/check.js';
import { readOutbox } from '../../harness/delivery/outbox.js';
import { track, waitForOwed, type ClientSpec, type TrackedClient } from '../../harness/delivery/tracked.js';
import type { WriterMap } from '../../harness/delivery/writers.js';
import { NO_TEARDOWN } from '../../harness/teardown.js';
import type { Instance, Instances, Stop } from './instances.js';
import { sleep, type Random } from './random.js';
import { CHURNING, label, LEAVES, LONG_LIVED, type Leave, type Subscription } from './subscriptions.js';

/** How long a client that left on purpose may wait for what was committed before it left. */
const DRAIN_TIMEOUT = 60_000;

/** A client stops reading at least this long: two and a half heartbeats of the chaos server. */
const STALL_MIN = 25_000;

/** Rows this far below a leaving client's start are read too, so an early event is named early. */
const EARLY_WINDOW = 2000;

/** A client of the run. */
export interface ChaosClient {
  kind: 'long-lived' | 'short-lived' | 'stalled';
  tracked: TrackedClient;
  /** The instance it connected to. */
  instance: Instance;
  /** Seconds into the run when its socket closed. */
  closedAt: number | null;
}

/** A checked client: its report and how it ended. */
export interface CheckedClient {
  kind: ChaosClient['kind'];
  /** How it ended: `stayed`, `left (close)`, `dropped by the server (1006)`, ... */
  ending: string;
  report: ClientReport;
}

/** What the population needs from the run. */
export interface PopulationContext {
  /** The run's own pool (the writer role), for outbox positions and reads. */
  pool: pg.Pool;
  instances: Instances;
  writers: WriterMap;
  /** The outbox position at the start of the run. */
  mark: number;
  /** Aborted when the run's time is up. */
  signal: AbortSignal;
  log: (text: string) => void;
  /** Seconds since the start of the run. */
  elapsed: () => number;
  /** What the faults are doing now, e.g. `app locked out`: refusals are counted by it. */
  phase: () => string;
}

/** Every client of the run, and the verdicts of those already checked. */
export class Population {
  readonly #context: PopulationContext;
  /** Connected until the end: checked after the final settle. */
  readonly staying: ChaosClient[] = [];
  readonly checked: CheckedClient[] = [];
  readonly counts = { joined: 0, left: 0, drainTimeouts: 0, stalled: 0, stalledDropped: 0, stalledKept: 0, stalledCut: 0, cutByDeploy: 0, cutByCrash: 0 };
  /** Failed connection attempts, by reason (HTTP 500 is expected while the app is cut off). */
  readonly refused = new Map<string, number>();
  /** Clients the server closed while they were reading: each a broken promise. */
  readonly dropped: string[] = [];
  readonly #droppedStaying = new Set<ChaosClient>();
  readonly #cutStaying = new Map<ChaosClient, Stop>();
  /** Clients cut by restarts, by how and close code (`deploy 1001`, `crash 1006`, ...). */
  readonly cuts = new Map<string, number>();
  #longLived: { spec: ClientSpec; client: ChaosClient }[] = [];

  constructor(context: PopulationContext) {
    this.#context = context;
  }

  /** Connects the long-lived clients (retrying a few times: they are the run's backbone). */
  async startLongLived(specs: readonly ClientSpec[]): Promise<void> {
    for (const spec of specs) {
      const client = await this.#joinLongLived(spec, spec.name, 5);
      if (!client) throw new Error(`the long-lived client ${spec.name} could not connect`);
      this.#longLived.push({ spec, client });
    }
  }

  /**
   * Keeps each long-lived client until the run's time is up; one whose instance is restarted
   * under it is checked and replaced by a new connection (`acme #2`, ...).
   */
  async runLongLived(): Promise<void> {
    const { signal } = this.#context;
    await Promise.all(
      this.#longLived.map(async ({ spec, client: first }) => {
        let client: ChaosClient | null = first;
        for (let generation = 2; client; generation++) {
          const { socket } = client.tracked.client;
          await new Promise<void>((resolve) => {
            if (client?.tracked.client.closed || signal.aborted) return resolve();
            socket.once('close', () => resolve());
            signal.addEventListener('abort', () => resolve(), { once: true });
          });
          if (!client.tracked.client.closed) return void this.staying.push(client);
          await this.#ended(client);
          client = signal.aborted ? null : await this.#joinLongLived(spec, `${spec.name} #${generation}`, Infinity);
        }
      }),
    );
  }

  async #joinLongLived(spec: ClientSpec, name: string, attempts: number): Promise<ChaosClient | null> {
    for (let attempt = 1; attempt <= attempts && !(attempt > 1 && this.#context.signal.aborted); attempt++) {
      const client = await this.#join(spec, name, 'long-lived');
      if (client) return client;
      await sleep(1000);
    }
    return null;
  }

  /** One slot of clients that come and go, one after the other, until the run's time is up. */
  async runSlot(slot: number, random: Random): Promise<void> {
    const { signal } = this.#context;
    for (let round = 1; !signal.aborted; round++) {
      await sleep(random.between(0, 3000), signal);
      if (signal.aborted) break;
      const spec = random.pick(CHURNING);
      const client = await this.#join(spec, `s${slot}.${round} ${label(spec)}`, 'short-lived');
      if (!client) continue;
      await sleep(random.between(2000, 40_000), signal);
      if (client.tracked.client.closed) {
        await this.#ended(client);
        continue;
      }
      if (signal.aborted) {
        this.staying.push(client);
        break;
      }
      await this.#leave(client, random.pick(LEAVES));
    }
  }

  /**
   * A reconnect storm (a deploy, a network blip): `size` clients connect at once, stay a few
   * seconds and leave together. Handshakes then overlap each other and the listener's reads.
   */
  async runStorm(index: number, size: number, random: Random): Promise<void> {
    const specs = Array.from({ length: size }, () => random.pick(CHURNING));
    const joined = await Promise.all(specs.map((spec, member) => this.#join(spec, `storm ${index}.${member + 1} ${label(spec)}`, 'short-lived')));
    const clients = joined.filter((client): client is ChaosClient => client !== null);
    this.#context.log(`storm ${index}: ${clients.length} of ${size} clients connected at once`);
    await sleep(random.between(5000, 20_000), this.#context.signal);
    await Promise.all(
      clients.map(async (client) => {
        if (client.tracked.client.closed) return this.#ended(client);
        if (this.#context.signal.aborted) return void this.staying.push(client);
        return this.#leave(client, random.pick(LEAVES));
      }),
    );
  }

  /**
   * A client that stops reading for a while: the server must drop it (heartbeat, or 1013 for
   * unsent bytes) without it delaying anyone. What it did receive must be a gap-free prefix.
   */
  async runStalled(index: number, random: Random): Promise<void> {
    const spec = LONG_LIVED[0] as ClientSpec;
    const client = await this.#join(spec, `stalled ${index} ${label(spec)}`, 'stalled');
    if (!client) return;
    this.counts.stalled++;
    const { socket } = client.tracked.client;
    await sleep(1000);
    socket.pause();
    const pausedAt = performance.now();
    await sleep(random.between(STALL_MIN, 45_000), this.#context.signal);
    const pausedFor = performance.now() - pausedAt;
    socket.resume();
    const closed = await client.tracked.client.waitForClose(10_000).catch(() => null);
    if (closed && this.#cutBy(client)) {
      this.counts.stalledCut++;
      this.#context.log(`stalled client ${index}: cut by a restart of ${client.instance.name} (close ${closed.code})`);
      return this.#ended(client);
    }
    if (closed) {
      this.counts.stalledDropped++;
      this.#context.log(`stalled client ${index}: dropped by the server (close ${closed.code}) while it was not reading`);
      await this.#check(client, `dropped while not reading (${closed.code})`, new Set());
      return;
    }
    // Two heartbeats without an answer must have dropped it, unless the run ended first.
    const pausedLongEnough = pausedFor >= STALL_MIN;
    if (pausedLongEnough) this.counts.stalledKept++;
    this.#context.log(`${pausedLongEnough ? '! ' : ''}stalled client ${index}: still connected after not reading for ${Math.round(pausedFor / 1000)} s`);
    if (this.#context.signal.aborted) this.staying.push(client);
    else await this.#leave(client, 'close');
  }

  /**
   * Call after the final settle, before the server closes: a staying client closed by now was
   * dropped by the server (a broken promise); it is then owed nothing past what it received.
   */
  noteDroppedStaying(): void {
    for (const client of this.staying) {
      if (!client.tracked.client.closed) continue;
      const cut = this.#cutBy(client);
      if (cut) {
        this.#cutStaying.set(client, cut);
        this.#countCut(client, cut);
      } else {
        this.#droppedStaying.add(client);
        this.dropped.push(this.#describeDrop(client));
      }
    }
  }

  /** Checks every staying client against `rows` (every row committed during the run). */
  checkStaying(rows: readonly OutboxRow[]): void {
    const gone = (client: ChaosClient): boolean => this.#droppedStaying.has(client) || this.#cutStaying.has(client);
    const records = this.staying.map((client) => ({ ...client.tracked.record(), ...(gone(client) ? { owedOnly: new Set<number>() } : {}) }));
    const reports = checkDelivery(rows, records).clients;
    this.staying.forEach((client, index) => {
      const code = client.tracked.client.closed?.code;
      const cut = this.#cutStaying.get(client);
      const ending = cut ? `cut by a ${cut} (${code})` : this.#droppedStaying.has(client) ? `dropped by the server (${code})` : 'stayed';
      this.checked.push({ kind: client.kind, ending, report: reports[index] as ClientReport });
    });
  }

  async #join(spec: Subscription, name: string, kind: ChaosClient['kind']): Promise<ChaosClient | null> {
    const { pool, instances, elapsed } = this.#context;
    try {
      const instance = instances.pick();
      const tracked = await track(pool, {
        ...spec,
        name: `${name} @${instance.name}`,
        connect: async () => {
          const url = await instance.server.endpoint(spec.environmentId, spec.objectClassIds).catch((error: Error) => {
            const cause = error.message.replace(/^no token: /, '').replace(/te_app_[0-9a-f]+/g, '<app role>');
            throw Object.assign(error, { reason: `no token (${cause})` });
          });
          const client = await TestClient.connect(NO_TEARDOWN, url);
          client.socket.on('error', () => {}); // a reset after open ends in 'close'; it is reported there
          return client;
        },
      });
      this.counts.joined++;
      const client: ChaosClient = { kind, tracked, instance, closedAt: null };
      tracked.client.socket.once('close', () => (client.closedAt = elapsed()));
      return client;
    } catch (error) {
      const failure = error as Error & { statusCode?: number; reason?: string };
      const reason = `${failure.reason ?? (failure.statusCode ? `HTTP ${failure.statusCode}` : failure.message)}, ${this.#context.phase()}`;
      this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
      return null;
    }
  }

  #describeDrop(client: ChaosClient): string {
    const closed = client.tracked.client.closed as { code: number; reason: string };
    return `${client.tracked.record().name} (${client.kind}, close ${closed.code}${closed.reason ? ` ${closed.reason}` : ''})`;
  }

  /**
   * Whether the client's socket was closed by a restart of its instance: after the instance was
   * stopped on purpose, with 1006 from a crash; with 1001 from a deploy, or 1006 when the process
   * exited before the close handshake ended (a client that was not reading). The report shows the codes.
   */
  #cutBy(client: ChaosClient): Stop | null {
    const { stopped } = client.instance;
    const code = client.tracked.client.closed?.code;
    if (!stopped || client.closedAt === null || client.closedAt < stopped.at) return null;
    return code === 1006 || (code === 1001 && stopped.how === 'deploy') ? stopped.how : null;
  }

  #countCut(client: ChaosClient, how: Stop): void {
    this.counts[how === 'deploy' ? 'cutByDeploy' : 'cutByCrash']++;
    const key = `${how} ${client.tracked.client.closed?.code}`;
    this.cuts.set(key, (this.cuts.get(key) ?? 0) + 1);
  }

  /** A client the server closed while it was reading: cut by a restart, or dropped (a broken promise); checked as far as it got. */
  async #ended(client: ChaosClient): Promise<void> {
    const cut = this.#cutBy(client);
    if (cut) {
      this.#countCut(client, cut);
      return this.#check(client, `cut by a ${cut} (${client.tracked.client.closed?.code})`, new Set());
    }
    this.dropped.push(this.#describeDrop(client));
    this.#context.log(`! the server closed ${this.#describeDrop(client)} while it was reading`);
    await this.#check(client, `dropped by the server (${client.tracked.client.closed?.code})`, new Set());
  }

  /**
   * Leaves on purpose. Unless abrupt, it first waits until it has received every event committed
   * before it decided to leave (messages are batched: some are still on their way); then it is
   * owed exactly those, and what came after must be a gap-free prefix of the rest.
   */
  async #leave(client: ChaosClient, how: Leave): Promise<void> {
    const { client: socketClient, record } = client.tracked;
    let owedOnly = new Set<number>();
    if (how === 'abrupt') {
      socketClient.socket.terminate();
    } else {
      const start = record().start as { before: number; after: number };
      const committed = await readOutbox(this.#context.pool, start.before);
      owedOnly = new Set(committed.map((row) => row.id));
      const drained = await waitForOwed(client.tracked, committed, DRAIN_TIMEOUT);
      if (socketClient.closed) return this.#ended(client); // closed under it meanwhile: by a restart, or dropped
      if (!drained) {
        this.counts.drainTimeouts++;
        this.#context.log(`! ${record().name}: not everything committed before it left arrived within ${DRAIN_TIMEOUT / 1000} s`);
      }
      if (how === 'close') {
        socketClient.socket.close(1000);
        await socketClient.waitForClose(5000).catch(() => socketClient.socket.terminate());
      } else {
        socketClient.socket.terminate();
      }
    }
    this.counts.left++;
    await this.#check(client, `left (${how})`, owedOnly);
  }

  /** Checks a client that is gone, against the rows committed by now; its frames can then go. */
  async #check(client: ChaosClient, ending: string, owedOnly: ReadonlySet<number>): Promise<void> {
    const record = client.tracked.record();
    const before = (record.start as { before: number }).before;
    const rows = await readOutbox(this.#context.pool, Math.max(this.#context.mark, before - EARLY_WINDOW), (taskId) => this.#context.writers.get(taskId));
    const report = checkDelivery(rows, [{ ...record, owedOnly }]).clients[0] as ClientReport;
    this.checked.push({ kind: client.kind, ending, report });
  }
}
