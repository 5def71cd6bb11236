// The chaos run's clients of the client module (`fastify-task-events/client`, protocol v2): they
// stay for the whole run and ride through every deploy, crash, lockout and termination, going to
// whichever instance is up and resuming from their last cursor. Each is checked against every row
// of its tenant and filter committed after its first `ready` cursor — the rows that cursor's
// snapshot does not see, as PostgreSQL itself says (`pg_visible_in_snapshot`) — exactly once, and
// each writer's rows in the order it committed them.
import type pg from 'pg';
import WebSocket from 'ws';
import { createTaskEventsClient, type TaskEventName, type TaskEventsClient } from '../../client/index.js';
import { keyOf, PROBLEMS, type ClientReport, type OutboxRow, type Problem } from '../../harness/delivery/check.js';
import type { Instances } from './instances.js';
import { sleep } from './random.js';

/** Who a resuming client is: its tenant and filters. */
export interface ResumingSpec {
  name: string;
  environmentId: number;
  objectClassIds?: readonly number[];
  eventTypes?: readonly TaskEventName[];
}

const OWNERSHIP: readonly TaskEventName[] = ['task_owner_added', 'task_owner_removed', 'task_assignee_added', 'task_assignee_removed'];

/** The resuming clients, in the order they are started (`--v2-clients N` takes the first N). */
export const RESUMING: readonly ResumingSpec[] = [
  { name: 'v2 acme', environmentId: 1 },
  { name: 'v2 globex', environmentId: 2 },
  { name: 'v2 acme [1]', environmentId: 1, objectClassIds: [1] },
  { name: 'v2 acme created/deleted', environmentId: 1, eventTypes: ['task_created', 'task_deleted'] },
  { name: 'v2 globex [4] status', environmentId: 2, objectClassIds: [4], eventTypes: ['task_status_changed'] },
  { name: 'v2 acme [2,3]', environmentId: 1, objectClassIds: [2, 3] },
  { name: 'v2 globex owners', environmentId: 2, eventTypes: OWNERSHIP },
  { name: 'v2 acme [3] values', environmentId: 1, objectClassIds: [3], eventTypes: ['task_value_changed'] },
  { name: 'v2 acme (2)', environmentId: 1 },
  { name: 'v2 globex [1] (another tenant\'s class)', environmentId: 2, objectClassIds: [1] },
  { name: 'v2 globex (2)', environmentId: 2 },
  { name: 'v2 acme [1,2] owners', environmentId: 1, objectClassIds: [1, 2], eventTypes: OWNERSHIP },
];

/** One resuming client and what it saw. */
interface Followed {
  spec: ResumingSpec;
  client: TaskEventsClient;
  /** The cursor of its first `ready`: where its stream starts. */
  firstCursor: string | null;
  /** What each message held, as (task_id, event, timestamp) keys, in arrival order. */
  messages: string[][];
  /** Messages that were empty or not ascending by timestamp. */
  badMessages: string[];
  /** Every key received (for the settle). */
  received: Set<string>;
  /** `ready` frames: the first, then one per resume. */
  readies: number;
  gaps: string[];
  /** Why it reconnected, counted: `1001`, `1006`, `error`, `token`, ... */
  retries: Map<string, number>;
  error: string | null;
}

/** The verdict for one resuming client: the checker's counts, and how its connection fared. */
export interface ResumingReport extends ClientReport {
  resumes: number;
  gaps: number;
  retries: Record<string, number>;
  error: string | null;
}

/** Whether `row` is of the client's tenant and passes both its filters. */
const isFor = (spec: ResumingSpec, row: OutboxRow): boolean =>
  row.environmentId === spec.environmentId &&
  (!spec.objectClassIds || (row.objectClassId !== null && spec.objectClassIds.includes(row.objectClassId))) &&
  (!spec.eventTypes || spec.eventTypes.includes(row.event as TaskEventName));

/** The snapshot (`xmin:xmax:xip`) of a fresh `ready` cursor: the part before '.', base64url. */
export function cursorSnapshot(cursor: string): string {
  const payload = Buffer.from(cursor.split('.')[0] as string, 'base64url').toString();
  if (!/^\d+:\d+:[\d,]*$/.test(payload)) throw new Error(`not the cursor of a fresh ready: ${payload.slice(0, 80)}`);
  return payload;
}

/** The resuming clients of a run. */
export class ResumingClients {
  readonly #followed: Followed[];
  /** What each client is owed, read by settle(). */
  readonly #owed = new Map<Followed, Set<number>>();

  /** Starts one client per spec; each connects to whichever instance is up, with a token from one. */
  constructor(instances: Instances, specs: readonly ResumingSpec[]) {
    this.#followed = specs.map((spec) => {
      const client = createTaskEventsClient({
        url: () => instances.endpoint(),
        getToken: () => instances.pick().server.token(spec.environmentId),
        WebSocket: WebSocket as never,
        ...(spec.objectClassIds ? { objectClassIds: spec.objectClassIds } : {}),
        ...(spec.eventTypes ? { eventTypes: spec.eventTypes } : {}),
      });
      const followed: Followed = {
        spec, client, firstCursor: null, messages: [], badMessages: [], received: new Set(), readies: 0, gaps: [], retries: new Map(), error: null,
      };
      client.on('status', (status) => {
        if (status !== 'open') return;
        followed.readies++;
        followed.firstCursor ??= client.cursor ?? null;
      });
      client.on('events', (events) => {
        const keys = events.map(keyOf);
        if (!events.length || events.some((event, index) => index > 0 && (events[index - 1]?.timestamp as string) > event.timestamp)) {
          followed.badMessages.push(JSON.stringify(events).slice(0, 160));
        }
        followed.messages.push(keys);
        for (const key of keys) followed.received.add(key);
      });
      client.on('gap', ({ reason }) => void followed.gaps.push(reason));
      client.on('retry', ({ reason, code }) => {
        const why = reason === 'closed' ? `close ${code}` : reason;
        followed.retries.set(why, (followed.retries.get(why) ?? 0) + 1);
      });
      client.on('error', (error) => void (followed.error = `${error.code}: ${error.message}`));
      return followed;
    });
  }

  get size(): number {
    return this.#followed.length;
  }

  /** Resolves when every client has had its first `ready`; throws after `timeout` ms. */
  async ready(timeout: number): Promise<void> {
    const deadline = performance.now() + timeout;
    while (this.#followed.some((followed) => followed.firstCursor === null)) {
      const failed = this.#followed.find((followed) => followed.error);
      if (failed) throw new Error(`${failed.spec.name}: ${failed.error}`);
      if (performance.now() > deadline) throw new Error(`the v2 clients were not all ready within ${timeout / 1000} s`);
      await sleep(50);
    }
  }

  /** Resumes so far, summed over the clients. */
  get resumes(): number {
    return this.#followed.reduce((sum, followed) => sum + Math.max(0, followed.readies - 1), 0);
  }

  /**
   * Once the writers have stopped: reads what each client is owed, and waits until every client
   * has it all, or `timeout` ms. `rows`: every row committed since the run began. Returns the
   * names of the clients that had not.
   */
  async settle(pool: pg.Pool, rows: readonly OutboxRow[], timeout: number): Promise<string[]> {
    for (const followed of this.#followed) this.#owed.set(followed, await this.#readOwed(pool, followed));
    const byId = new Map(rows.map((row) => [row.id, keyOf(row)]));
    const missing = (followed: Followed): boolean => [...this.#owedTo(followed)].some((id) => !followed.received.has(byId.get(id) as string));
    const deadline = performance.now() + timeout;
    while (this.#followed.some(missing) && performance.now() < deadline) await sleep(200);
    return this.#followed.filter(missing).map((followed) => followed.spec.name);
  }

  /** Stops every client (before the instances close: they would only reconnect). */
  close(): void {
    for (const { client } of this.#followed) client.close();
  }

  /** After settle(): checks every client against `rows` (every row committed since the run began) and what it is owed. */
  check(rows: readonly OutboxRow[]): ResumingReport[] {
    const byKey = new Map(rows.map((row) => [keyOf(row), row]));
    const byId = new Map(rows.map((row) => [row.id, row]));
    return this.#followed.map((followed) => {
      const counts = Object.fromEntries(PROBLEMS.map((problem) => [problem, 0])) as Record<Problem, number>;
      const examples = Object.fromEntries(PROBLEMS.map((problem) => [problem, []])) as unknown as Record<Problem, string[]>;
      const note = (problem: Problem, text: string): void => {
        counts[problem]++;
        if (examples[problem].length < 5) examples[problem].push(text);
      };
      const mine = this.#owedTo(followed);
      for (const bad of followed.badMessages) note('badFrames', bad);
      const seen = new Set<number>();
      const highest = new Map<string, number>(); // per writer (or transaction): the highest id received
      let received = 0;
      for (const key of followed.messages.flat()) {
        received++;
        const row = byKey.get(key);
        if (!row) note('unknown', key);
        else if (!isFor(followed.spec, row)) note('foreign', `#${row.id} ${key}`);
        else if (!mine.has(row.id)) note('early', `#${row.id} ${key} (its first cursor's snapshot saw it)`);
        else if (seen.has(row.id)) note('duplicated', `#${row.id} ${key}`);
        else {
          seen.add(row.id);
          const stream = row.writer ?? `xid ${row.xid}`;
          if ((highest.get(stream) ?? -1) > row.id) note('outOfOrder', `#${row.id} ${key} after #${highest.get(stream)} (${stream})`);
          else highest.set(stream, row.id);
        }
      }
      for (const id of mine) {
        const row = byId.get(id);
        if (!seen.has(id)) note('lost', row ? `#${id} ${keyOf(row)} env ${row.environmentId} class ${row.objectClassId}${row.writer ? ` (${row.writer})` : ''}` : `#${id}`);
      }
      return {
        name: followed.spec.name, owed: mine.size, received, counts, examples,
        resumes: Math.max(0, followed.readies - 1), gaps: followed.gaps.length, retries: Object.fromEntries(followed.retries), error: followed.error,
      };
    });
  }

  #owedTo(followed: Followed): Set<number> {
    return this.#owed.get(followed) ?? new Set();
  }

  /** The ids of the rows of the client's tenant and filters that its first cursor's snapshot does not see. */
  async #readOwed(pool: pg.Pool, followed: Followed): Promise<Set<number>> {
    if (!followed.firstCursor) return new Set();
    const { spec } = followed;
    const { rows } = await pool.query<{ id: string }>(
      `SELECT id FROM task_events.outbox
       WHERE environment_id = $1 AND ($2::bigint[] IS NULL OR object_class_id = ANY($2)) AND ($3::text[] IS NULL OR event = ANY($3))
         AND NOT pg_visible_in_snapshot(xid, $4::pg_snapshot)`,
      [spec.environmentId, spec.objectClassIds ?? null, spec.eventTypes ?? null, cursorSnapshot(followed.firstCursor)],
    );
    return new Set(rows.map((row) => Number(row.id)));
  }
}
