// Writers of the delivery tests and the chaos run: several connections, each one sequence of
// transactions over tasks of its own, so the checker can hold each writer's rows to its commit order.
import type pg from 'pg';
import type { Teardowns } from '../teardown.js';
import type { OutboxRow } from './check.js';
import { readOutbox, type OutboxTable } from './outbox.js';
/** Task ids → the writer that created them (and alone changes them). */
export type WriterMap = Map<number, string>;

/** A writer connection, running until stopped. */
export interface MixedWriter {
  readonly name: string;
  /** Transactions committed so far. */
  readonly transactions: number;
  stop(): Promise<void>;
}

/** Where a writer's tasks live: environment and object class. */
export type Target = readonly [environmentId: number, objectClassId: number];

/** Options of {@link startMixedWriter}. */
export interface MixedWriterOptions {
  name: string;
  /** One new task per target in each transaction. */
  targets: readonly Target[];
  /** Records which tasks are this writer's. */
  writers: WriterMap;
  /** Milliseconds between two transactions (a rate, not a wait for anything); 0 for back to back. */
  pause?: number;
}

/** The user of an environment in the reference seed (alice of Acme, bob of Globex). */
const USER_OF: Record<number, number> = { 1: 1, 2: 2 };

/**
 * Writes, on a connection of its own, transactions that touch every kind of event: each creates a
 * task per target and changes status, values, owners, assignees of its earlier tasks and deletes
 * one. Every event of a task comes from the writer that created it. Stopped at the latest when the
 * test ends; `stop()` rejects with the writer's error, if it failed.
 */
export function startMixedWriter(t: Teardowns, pool: pg.Pool, options: MixedWriterOptions): MixedWriter {
  const { name, targets, writers, pause = 0 } = options;
  let transactions = 0;
  let stopped = false;
  let wakeUp: (() => void) | null = null;
  const live: { id: number; environmentId: number; owned: boolean; assigned: boolean }[] = [];

  const step = (n: number): string => {
    const statements = ['BEGIN'];
    statements.push(
      `INSERT INTO tasks (environment_id, object_class_id, name) VALUES ${targets.map(([e, c]) => `(${e}, ${c}, '${name} ${n}')`).join(', ')} RETURNING id, environment_id`,
    );
    // Older tasks, each touched at most once per transaction (no two events of a kind per task).
    const pick = (offset: number): (typeof live)[number] | undefined => live[live.length - 1 - offset];
    const a = pick(0);
    const b = pick(1);
    const c = pick(2);
    if (a) statements.push(`UPDATE tasks SET status = 's${n}' WHERE id = ${a.id}`);
    if (b) statements.push(`UPDATE tasks SET "values" = '{"n": ${n}}', status = 'v${n}' WHERE id = ${b.id}`);
    if (c) {
      statements.push(c.owned ? `DELETE FROM task_owners WHERE task_id = ${c.id}` : `INSERT INTO task_owners VALUES (${c.id}, ${USER_OF[c.environmentId] ?? 1})`);
      statements.push(c.assigned ? `DELETE FROM task_assignees WHERE task_id = ${c.id}` : `INSERT INTO task_assignees VALUES (${c.id}, ${USER_OF[c.environmentId] ?? 1})`);
      c.owned = !c.owned;
      c.assigned = !c.assigned;
    }
    if (live.length > 6) statements.push(`DELETE FROM tasks WHERE id = ${(live.shift() as (typeof live)[number]).id}`);
    statements.push('COMMIT');
    return statements.join(';\n');
  };

  const loop = (async () => {
    const client = await pool.connect();
    try {
      while (!stopped) {
        const results = (await client.query(step(transactions))) as unknown as pg.QueryResult<{ id: string; environment_id: string }>[];
        for (const row of results[1]?.rows ?? []) {
          const id = Number(row.id);
          writers.set(id, name);
          live.push({ id, environmentId: Number(row.environment_id), owned: false, assigned: false });
        }
        transactions++;
        if (pause > 0 && !stopped) await new Promise<void>((resolve) => setTimeout((wakeUp = resolve), pause));
      }
    } finally {
      client.release();
    }
  })();
  loop.catch(() => {}); // reported by stop()
  const stop = async (): Promise<void> => {
    stopped = true;
    wakeUp?.();
    await loop;
  };
  t.teardown(() => stop().catch(() => {}));
  return {
    name,
    get transactions() {
      return transactions;
    },
    stop,
  };
}

/** Several writers, started and stopped together. */
export interface Workload {
  readonly writers: WriterMap;
  readonly all: readonly MixedWriter[];
  /** Transactions committed so far, by all writers. */
  readonly transactions: number;
  /** Resolves once `count` more transactions have committed than when called. */
  waitForMore(count: number, timeout?: number): Promise<void>;
  stop(): Promise<void>;
  /** Every outbox row above `after` (from `table`), labelled with its writer. */
  rows(pool: pg.Pool, after?: number, table?: OutboxTable): Promise<OutboxRow[]>;
}

/**
 * The workload of the fault tests: three writers over two environments and several classes —
 * `w1` Acme classes 1 and 2, `w2` Acme class 1 and Globex class 4, `w3` Globex class 4.
 */
export function startWorkload(t: Teardowns, pool: pg.Pool, options: { pause?: number; writers?: WriterMap } = {}): Workload {
  const writers = options.writers ?? new Map<number, string>();
  const specs: [string, Target[]][] = [
    ['w1', [[1, 1], [1, 2]]],
    ['w2', [[1, 1], [2, 4]]],
    ['w3', [[2, 4]]],
  ];
  const all = specs.map(([name, targets]) => startMixedWriter(t, pool, { name, targets, writers, pause: options.pause }));
  const total = (): number => all.reduce((sum, writer) => sum + writer.transactions, 0);
  return {
    writers,
    all,
    get transactions() {
      return total();
    },
    waitForMore: async (count, timeout = 15_000) => {
      const target = total() + count;
      const deadline = Date.now() + timeout;
      while (total() < target) {
        if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${count} more transactions (have ${total()} of ${target})`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    stop: async () => {
      await Promise.all(all.map((writer) => writer.stop()));
    },
    rows: (pool, after = 0, table = 'task_events.outbox') => readOutbox(pool, after, (taskId) => writers.get(taskId), table),
  };
}
