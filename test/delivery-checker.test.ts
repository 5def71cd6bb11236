// The delivery checker (test/helpers/delivery.ts) on synthetic input: it must see each kind of
// failure it exists to report, and nothing where there is none. No database needed.
import t from 'tap';
import { checkDelivery, type ClientRecord, type OutboxRow } from '../harness/delivery/check.js';
import { formatReport, problemCount } from '../harness/delivery/report.js';

/** Rows 1..n: odd ids by writer `a`, even by `b`; environment 1 class 1, except where told. */
function rows(n: number, overrides: Record<number, Partial<OutboxRow>> = {}): OutboxRow[] {
  return Array.from({ length: n }, (_, index) => {
    const id = index + 1;
    return {
      id,
      environmentId: 1,
      objectClassId: 1,
      taskId: 100 + id,
      event: 'task_created',
      timestamp: `2025-01-16T11:07:57.${String(id).padStart(6, '0')}+00:00`,
      xid: String(1000 + id),
      writer: id % 2 ? 'a' : 'b',
      ...overrides[id],
    };
  });
}

/** The event a client receives for a row. */
const sent = (row: OutboxRow): Record<string, unknown> => ({ task_id: row.taskId, object_class_id: row.objectClassId, event: row.event, timestamp: row.timestamp });

/** A client of environment 1 that received `frames` (row ids per frame). */
function client(all: OutboxRow[], frames: number[][], extra: Partial<ClientRecord> = {}): ClientRecord {
  const byId = new Map(all.map((row) => [row.id, row]));
  return {
    name: 'c',
    environmentId: 1,
    objectClassIds: null,
    frames: frames.map((frame) => frame.map((id) => sent(byId.get(id) as OutboxRow))),
    ...extra,
  };
}

function counts(all: OutboxRow[], record: ClientRecord): Record<string, number> {
  const report = checkDelivery(all, [record]);
  const only = report.clients[0];
  if (!only) throw new Error('no report');
  // Only the non-zero counts, so each assertion names exactly what it expects.
  return Object.fromEntries(Object.entries(only.counts).filter(([, count]) => count > 0));
}

t.test('a complete, ordered delivery has no problem', async (t) => {
  const all = rows(6);
  const report = checkDelivery(all, [client(all, [[1, 2, 3], [4, 5, 6]], { start: { before: 0, after: 0 } })]);
  t.equal(problemCount(report.clients[0] as never), 0);
  t.equal(report.clients[0]?.owed, 6);
  t.match(formatReport(report), /delivery of 6 outbox rows/);
});

t.test('detects a lost event', async (t) => {
  const all = rows(6);
  t.same(counts(all, client(all, [[1, 2], [4, 5, 6]], { start: { before: 0, after: 0 } })), { lost: 1 });
  // Lost at the very start: the bracket says the client was connected before row 1 was written.
  t.same(counts(all, client(all, [[2, 3, 4, 5, 6]], { start: { before: 0, after: 0 } })), { lost: 1 });
  const report = formatReport(checkDelivery(all, [client(all, [[1, 2], [4, 5, 6]])]));
  t.match(report, /1 lost — owed but never received/);
  t.match(report, /#3 task_created task 103/);
});

t.test('detects a duplicated event, within a message or across messages', async (t) => {
  const all = rows(4);
  t.same(counts(all, client(all, [[1, 2], [2, 3, 4]])), { duplicated: 1 });
  t.same(counts(all, client(all, [[1, 2, 3, 3, 4]])), { duplicated: 1 });
});

t.test('detects foreign events: another environment, or a class outside the filter', async (t) => {
  const all = rows(4, { 2: { environmentId: 2, objectClassId: 4 }, 3: { objectClassId: 2 } });
  t.same(counts(all, client(all, [[1, 2, 3, 4]], { objectClassIds: [1] })), { foreign: 2 });
  t.same(counts(all, client(all, [[1, 3, 4]])), {}, 'without a filter, class 2 is its own');
});

t.test('detects a reordered event of one writer, and accepts other writers interleaving', async (t) => {
  const all = rows(6);
  t.same(counts(all, client(all, [[1, 2], [5], [4], [3, 6]])), { outOfOrder: 1 }, '3 after 5, both by writer a');
  t.same(counts(all, client(all, [[1, 2], [3], [4], [6], [5]])), {}, "b's 6 before a's 5: commit order across writers is free");
  const noWriter = all.map(({ writer: _writer, ...row }) => ({ ...row, xid: '7' }));
  t.same(counts(noWriter, client(noWriter, [[2], [1], [3, 4, 5, 6]])), { outOfOrder: 1 }, 'rows of one transaction keep id order');
});

t.test('detects events from before the connection, unknown events and bad frames', async (t) => {
  const all = rows(6);
  t.same(counts(all, client(all, [[2, 3, 4, 5, 6]], { start: { before: 2, after: 3 } })), { early: 1 });
  t.same(counts(all, client(all, [[4, 5, 6]], { start: { before: 2, after: 3 } })), {}, 'its position within the bracket: 3');
  t.same(counts(all, client(all, [[5, 6]], { start: { before: 2, after: 3 } })), { lost: 1 }, 'row 4 came after the open');

  const forged = client(all, [[1, 2, 3, 4, 5, 6]]);
  const foreignKeys = [[{ ...sent(all[0] as OutboxRow), task_id: 999 }], [{ ...sent(all[1] as OutboxRow), object_class_id: 3 }]];
  t.same(counts(all, { ...forged, frames: [...forged.frames, ...foreignKeys] }), { unknown: 2 }, 'a task or a class the outbox does not have');

  const frames = [[], { type: 'error', error_code: 'ERR_INVALID_UUID' }, [sent(all[1] as OutboxRow), sent(all[0] as OutboxRow)]];
  t.same(counts(all, { ...client(all, []), frames }), { badFrames: 3, lost: 4 }, 'empty, error, and descending frames');
});

t.test('a client closed on purpose owes only what was committed before, but a prefix of each writer', async (t) => {
  const all = rows(8);
  const owedOnly = new Set([1, 2, 3, 4]);
  t.same(counts(all, client(all, [[1, 2, 3, 4]], { owedOnly })), {}, 'nothing after the close is owed');
  t.same(counts(all, client(all, [[1, 2, 3, 4, 5, 6]], { owedOnly })), {}, 'what did arrive is fine');
  t.same(counts(all, client(all, [[1, 2, 3]], { owedOnly })), { lost: 1 }, 'row 4 was owed');
  t.same(counts(all, client(all, [[1, 2, 3, 4, 7]], { owedOnly })), { lost: 1 }, "a's 7 arrived, so a's 5 was owed");
});

t.test('refuses rows it cannot tell apart', async (t) => {
  const all = rows(3, { 3: { taskId: 102, timestamp: '2025-01-16T11:07:57.000002+00:00' } });
  t.throws(() => checkDelivery(all, []), /share \(task_id, event, timestamp\)/);
});
