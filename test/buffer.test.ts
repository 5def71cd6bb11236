import t from 'tap';
import { EventBuffer, serialize, type TaskEvent } from '../lib/buffer.js';
import { parseSnapshot, type Snapshot } from '../lib/snapshot.js';

const read = { since: parseSnapshot('100:100:') as Snapshot, upto: parseSnapshot('200:200:') as Snapshot };
const event = (id: number, timestamp: string): TaskEvent => ({
  id, xid: 100 + id, read, environmentId: 1, objectClassId: 1, event: 'task_created', timestamp,
  json: JSON.stringify({ task_id: id, object_class_id: 1, event: 'task_created', timestamp }),
});

t.test('take cuts messages of at most the limit from the front', async (t) => {
  const buffer = new EventBuffer();
  for (let i = 1; i <= 5; i++) buffer.push(event(i, `2025-01-16T11:07:5${i}.000000+00:00`));
  t.same(buffer.take(2).map((e) => e.id), [1, 2]);
  t.equal(buffer.size, 3);
  t.same(buffer.take(2).map((e) => e.id), [3, 4]);
  t.same(buffer.take(2).map((e) => e.id), [5]);
  t.equal(buffer.size, 0);
  t.same(buffer.take(2), []);
});

t.test('within a message, events ascend by timestamp; ties keep creation order', async (t) => {
  const buffer = new EventBuffer();
  buffer.push(event(1, '2025-01-16T11:07:57.954470+00:00'));
  buffer.push(event(2, '2025-01-16T11:07:57.934931+00:00'));
  buffer.push(event(3, '2025-01-16T11:07:57.934931+00:00'));
  buffer.push(event(4, '2025-01-16T11:08:07.444085+00:00'));
  t.same(buffer.take(10).map((e) => e.id), [2, 3, 1, 4]);
});

t.test('a long buffer stays correct while its front is cut away', async (t) => {
  const buffer = new EventBuffer();
  const total = 20_000;
  for (let i = 0; i < total; i++) buffer.push(event(i, `2025-01-16T11:07:57.${String(i).padStart(6, '0')}+00:00`));
  const seen: number[] = [];
  while (buffer.size) seen.push(...buffer.take(999).map((e) => e.id));
  t.equal(seen.length, total);
  t.ok(seen.every((id, i) => id === i));
});

t.test('serialize builds one JSON array from the serialized events', async (t) => {
  const events = [event(1, '2025-01-16T11:07:57.954470+00:00'), event(2, '2025-01-16T11:07:58.000001+00:00')];
  const frame = serialize(events);
  t.ok(Buffer.isBuffer(frame));
  t.same(JSON.parse(String(frame)), events.map((e) => JSON.parse(e.json)));
  t.equal(String(serialize([])), '[]');
});

t.test('takeMessage names the last event in the order pushed, whatever the timestamps', async (t) => {
  const buffer = new EventBuffer();
  buffer.push(event(1, '2025-01-16T11:07:59.000000+00:00'));
  buffer.push(event(2, '2025-01-16T11:07:58.000000+00:00'));
  const { events, last } = buffer.takeMessage(5);
  t.same(events.map((e) => e.id), [2, 1], 'the message in timestamp order');
  t.equal(last.id, 2, 'the stream\'s last');
});
