// The delivery checker in a tap test: clients of an in-process server tracked for it, its verdict
// asserted. The checker itself, the outbox reads and the writers are in harness/delivery/ (the
// chaos run uses them too).
import type pg from 'pg';
import type { Test } from 'tap';
import { TestClient } from '../../harness/client.js';
import { checkDelivery, PROBLEMS, type ClientRecord, type DeliveryReport } from '../../harness/delivery/check.js';
import type { OutboxTable } from '../../harness/delivery/outbox.js';
import { formatReport } from '../../harness/delivery/report.js';
import { settle, track, type ClientSpec, type TrackedClient } from '../../harness/delivery/tracked.js';
import type { Workload } from '../../harness/delivery/writers.js';
import type { TestServer } from './server.js';

/** Asserts that every count of every client is zero; prints the report either way. */
export function assertDelivered(t: Test, report: DeliveryReport): void {
  const text = formatReport(report);
  t.comment(text);
  const zero = Object.fromEntries(PROBLEMS.map((problem) => [problem, 0]));
  for (const client of report.clients) {
    t.same(client.counts, zero, `${client.name}: ${client.owed} events owed, each received once, in order, nothing else`, {
      report: text,
    });
  }
}

/**
 * Connects a client of `spec` to `server` with a real `ws` client, bracketed for the checker.
 * `token`: one minted beforehand, for when the app's pool may be failing (minting uses it).
 */
export function joinTracked(t: Test, pool: pg.Pool, server: TestServer, spec: ClientSpec, token?: string): Promise<TrackedClient> {
  const query = new URLSearchParams(spec.objectClassIds ? { object_class_ids: spec.objectClassIds.join(',') } : {});
  return track(pool, {
    ...spec,
    connect: async () => {
      query.set('uuid', token ?? (await server.token(spec.environmentId)));
      return TestClient.connect(t, server.wsUrl(`/ws/events/tasks/?${query}`));
    },
  });
}

/**
 * The end of a delivery test: stops the writers, waits for every connected client's sentinels,
 * checks them (and `closed`, clients that were closed on purpose) against every outbox row after
 * `mark` (read from `table`: the copy when rows were pruned), and asserts every count is zero.
 */
export async function finishAndCheck(
  t: Test,
  pool: pg.Pool,
  workload: Workload,
  mark: number,
  connected: readonly TrackedClient[],
  closed: readonly ClientRecord[] = [],
  table: OutboxTable = 'task_events.outbox',
): Promise<DeliveryReport> {
  await workload.stop();
  const late = await settle(pool, connected);
  const report = checkDelivery(await workload.rows(pool, mark, table), [...connected.map((client) => client.record()), ...closed]);
  assertDelivered(t, report);
  t.same(late, [], 'every connected client got its sentinels and is still connected');
  return report;
}
