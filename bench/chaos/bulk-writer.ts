// The writes the mixed writers of harness/delivery/writers.ts do not make: multi-row statements
// (inserts of hundreds of tasks, updates and deletes of many), owners and assignees added and
// removed in bulk, transactions rolled back whole, in part (a savepoint) or by an error, and
// statements that change nothing an event is about. Like the mixed writers, it alone touches the
// tasks it created, and records them in the shared WriterMap, so the checker can hold its rows to
// its commit order.
import type pg from 'pg';
import type { WriterMap } from '../../harness/delivery/writers.js';
import { sleep, type Random } from './random.js';

/** Where its tasks go: every class of both environments of the reference seed. */
const TARGETS: readonly (readonly [environmentId: number, objectClassId: number])[] = [[1, 1], [1, 2], [1, 3], [2, 4]];

/** More live tasks than this and the oldest half is deleted in one statement. */
const LIVE_CAP = 1500;

interface Task {
  environmentId: number;
  owned: boolean;
  assigned: boolean;
}

/** A running bulk writer. */
export interface BulkWriter {
  readonly name: string;
  /** Transactions committed (each action is one). */
  readonly committed: number;
  /** Transactions rolled back on purpose (whole, or by a failing statement). */
  readonly rolledBack: number;
  /** Unexpected errors (the action was rolled back and the writer went on). */
  readonly errors: string[];
  /** Stops after the action under way. */
  stop(): Promise<void>;
}

/** Options of {@link startBulkWriter}. */
export interface BulkWriterOptions {
  name: string;
  writers: WriterMap;
  random: Random;
  /** Milliseconds between two actions: [min, max). */
  pause: readonly [number, number];
}

/** Starts the writer on a connection of its own from `pool`, until stop(). */
export function startBulkWriter(pool: pg.Pool, options: BulkWriterOptions): BulkWriter {
  const { name, writers, random } = options;
  const live = new Map<number, Task>(); // insertion order: oldest first
  const state = { committed: 0, rolledBack: 0, errors: [] as string[], stopped: false, step: 0 };
  const stopping = new AbortController();

  const some = (count: number): number[] => random.sample([...live.keys()], count);
  const list = (ids: readonly number[]): string => (ids.length ? ids.join(', ') : 'NULL');

  /** INSERT … SELECT of `perTarget` tasks for each of `targets`, returning what it created. */
  const insertMany = async (client: pg.PoolClient, targets: typeof TARGETS, perTarget: number): Promise<void> => {
    const values = targets.map(([environmentId, objectClassId]) => `(${environmentId}, ${objectClassId})`).join(', ');
    const { rows } = await client.query<{ id: string; environment_id: string }>(
      `INSERT INTO tasks (environment_id, object_class_id, name)
       SELECT t.environment_id, t.object_class_id, '${name} ${state.step}.' || n
       FROM (VALUES ${values}) AS t(environment_id, object_class_id), generate_series(1, ${perTarget}) AS n
       RETURNING id, environment_id`,
    );
    for (const row of rows) {
      // Recorded before COMMIT: a row must never reach a client before its writer is known.
      writers.set(Number(row.id), name);
      live.set(Number(row.id), { environmentId: Number(row.environment_id), owned: false, assigned: false });
    }
  };

  /** One transaction; `body` runs between BEGIN and COMMIT (or ROLLBACK when it says so). */
  const transaction = async (client: pg.PoolClient, body: () => Promise<'commit' | 'rollback'>): Promise<void> => {
    await client.query('BEGIN');
    const before = new Map([...live].map(([id, task]) => [id, { ...task }]));
    try {
      if ((await body()) === 'commit') {
        await client.query('COMMIT');
        state.committed++;
        return;
      }
      await client.query('ROLLBACK');
      state.rolledBack++;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      if ((error as { code?: string }).code === '23503') state.rolledBack++; // the failing action's FK violation
      else state.errors.push((error as Error).message);
    }
    // Rolled back: the tasks are as they were before.
    live.clear();
    for (const [id, task] of before) live.set(id, task);
  };

  const actions: [weight: number, run: (client: pg.PoolClient) => Promise<void>][] = [
    // Many tasks in one statement, across environments and classes.
    [3, (client) => transaction(client, async () => {
      await insertMany(client, random.sample(TARGETS, random.int(1, TARGETS.length)), random.int(5, 60));
      return 'commit';
    })],
    // Rarely, more than a message holds (messageLimit 1000) for Acme in one statement.
    [0.15, (client) => transaction(client, async () => {
      await insertMany(client, TARGETS.slice(0, 3), 350);
      return 'commit';
    })],
    // One UPDATE of many rows: status only, or status and values (two events per task).
    [3, (client) => transaction(client, async () => {
      const both = random.chance(0.5);
      await client.query(
        `UPDATE tasks SET status = '${name} ${state.step}'${both ? `, "values" = '{"step": ${state.step}}'` : ''}, updated_at = now()
         WHERE id IN (${list(some(random.int(2, 150)))})`,
      );
      return 'commit';
    })],
    // Owners and assignees added to some tasks and removed from others, in bulk.
    [2, (client) => transaction(client, async () => {
      const ids = some(random.int(2, 80));
      for (const [table, flag] of [['task_owners', 'owned'], ['task_assignees', 'assigned']] as const) {
        const adding = ids.filter((id) => !(live.get(id) as Task)[flag]);
        const removing = ids.filter((id) => (live.get(id) as Task)[flag]);
        if (adding.length) await client.query(`INSERT INTO ${table} (task_id, user_id) SELECT id, environment_id FROM tasks WHERE id IN (${list(adding)})`);
        if (removing.length) await client.query(`DELETE FROM ${table} WHERE task_id IN (${list(removing)})`);
        for (const id of ids) (live.get(id) as Task)[flag] = !(live.get(id) as Task)[flag];
      }
      return 'commit';
    })],
    // Many deletes at once (owners and assignees cascade: only task_deleted is an event).
    [1, (client) => transaction(client, async () => {
      const ids = some(random.int(2, 60));
      await client.query(`DELETE FROM tasks WHERE id IN (${list(ids)})`);
      for (const id of ids) live.delete(id);
      return 'commit';
    })],
    // A whole transaction rolled back: none of its events may ever reach anyone.
    [2, (client) => transaction(client, async () => {
      await insertMany(client, random.sample(TARGETS, 2), random.int(3, 20));
      await client.query(`UPDATE tasks SET status = 'rolled back ${state.step}' WHERE id IN (${list(some(30))})`);
      await client.query(`DELETE FROM tasks WHERE id IN (${list(some(5))})`);
      return 'rollback';
    })],
    // A savepoint rolled back inside a committed transaction: only the events outside it count.
    [2, (client) => transaction(client, async () => {
      await insertMany(client, random.sample(TARGETS, 2), random.int(2, 10));
      const [changed, ...undone] = [some(20), some(20), some(5)];
      await client.query('SAVEPOINT undone');
      await client.query(`UPDATE tasks SET status = 'undone ${state.step}' WHERE id IN (${list(undone[0] as number[])})`);
      await client.query(`DELETE FROM tasks WHERE id IN (${list(undone[1] as number[])})`);
      await client.query('ROLLBACK TO SAVEPOINT undone');
      await client.query(`UPDATE tasks SET "values" = '{"kept": ${state.step}}' WHERE id IN (${list(changed as number[])})`);
      return 'commit';
    })],
    // A transaction that fails half-way (an owner who does not exist): its first statement's events vanish.
    [1, (client) => transaction(client, async () => {
      const ids = some(10);
      await client.query(`UPDATE tasks SET status = 'failed ${state.step}' WHERE id IN (${list(ids)})`);
      await client.query(`INSERT INTO task_owners (task_id, user_id) VALUES (${ids[0] ?? 0}, 999999)`);
      return 'commit';
    })],
    // Statements that change nothing an event is about: no event may come of them.
    [1, (client) => transaction(client, async () => {
      const ids = some(50);
      await client.query(`UPDATE tasks SET status = status WHERE id IN (${list(ids)})`);
      await client.query(`UPDATE tasks SET updated_at = now() WHERE id IN (${list(ids)})`);
      return 'commit';
    })],
  ];
  const totalWeight = actions.reduce((sum, [weight]) => sum + weight, 0);
  const pickAction = (): ((client: pg.PoolClient) => Promise<void>) => {
    let roll = random.between(0, totalWeight);
    for (const [weight, run] of actions) if ((roll -= weight) < 0) return run;
    return (actions[0] as (typeof actions)[number])[1];
  };

  const loop = (async () => {
    const client = await pool.connect();
    try {
      while (!state.stopped) {
        state.step++;
        if (live.size > LIVE_CAP) {
          await transaction(client, async () => {
            const oldest = [...live.keys()].slice(0, live.size / 2);
            await client.query(`DELETE FROM tasks WHERE id IN (${list(oldest)})`);
            for (const id of oldest) live.delete(id);
            return 'commit';
          });
        } else {
          await pickAction()(client);
        }
        await sleep(random.between(...options.pause), stopping.signal);
      }
    } finally {
      client.release();
    }
  })();
  loop.catch((error: Error) => state.errors.push(`stopped: ${error.message}`));

  return {
    name,
    get committed() {
      return state.committed;
    },
    get rolledBack() {
      return state.rolledBack;
    },
    get errors() {
      return state.errors;
    },
    stop: async () => {
      state.stopped = true;
      stopping.abort();
      await loop.catch(() => {});
    },
  };
}
