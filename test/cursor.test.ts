// Snapshots and cursors, pure: visibility, order, and the signed, URL-safe encoding.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { TaskEvent } from '../lib/buffer.js';
import { cursorAfter, cursorAt, CursorCodec } from '../lib/cursor.js';
import { covers, later, parseSnapshot, unseen, visible, type Snapshot } from '../lib/snapshot.js';

const snap = (text: string): Snapshot => parseSnapshot(text) as Snapshot;

t.test('parseSnapshot takes what PostgreSQL writes and nothing else', async (t) => {
  t.match(parseSnapshot('10:20:12,15'), { xmin: 10, xmax: 20, text: '10:20:12,15' });
  t.strictSame([...snap('10:20:12,15').xip], [12, 15]);
  for (const bad of ['', '10:20', '20:10:', '10:20:5', '10:20:25', 'a:b:', '10:20:12,', '1:2:3:4']) t.equal(parseSnapshot(bad), null, bad);
});

t.test('visible: ended before xmin, or below xmax and not running', async (t) => {
  const s = snap('10:20:12,15');
  t.strictSame([9, 10, 12, 14, 15, 19, 20, 25].map((xid) => visible(s, xid)), [true, true, false, true, false, true, false, false]);
});

t.test('covers and later follow time: a later snapshot sees all an earlier one sees', async (t) => {
  const early = snap('10:20:12,15');
  const after = snap('12:30:12,25');
  t.ok(covers(after, early));
  t.notOk(covers(early, after));
  t.notOk(covers(snap('10:30:14'), early), '14 was visible to the earlier one');
  t.equal(later(early, after), after);
  t.equal(later(after, early), after);
});

t.test('the codec round-trips, is URL-safe, and refuses a changed byte or another key', async (t) => {
  const codec = new CursorCodec(randomBytes(32));
  const at = cursorAt(snap('10:20:12'));
  const read = { since: snap('10:20:12'), upto: snap('12:30:12,25') };
  const mid = cursorAfter({ id: 42, xid: 13, read } as unknown as TaskEvent, null);
  for (const cursor of [at, mid]) {
    const text = codec.encode(cursor);
    t.match(text, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'URL-safe');
    const back = codec.decode(text);
    t.strictSame([back?.floor.text, back?.upto.text, back?.lastId], [cursor.floor.text, cursor.upto.text, cursor.lastId]);
  }
  const text = codec.encode(mid);
  const flipped = text.slice(0, 3) + (text[3] === 'A' ? 'B' : 'A') + text.slice(4);
  t.equal(codec.decode(flipped), null, 'a changed byte');
  t.equal(new CursorCodec(randomBytes(32)).decode(text), null, 'another database\'s key');
  for (const bad of [undefined, 42, '', '.', 'abc', 'a.b.c', 'x'.repeat(5000)]) t.equal(codec.decode(bad), null, String(bad).slice(0, 10));
});

t.test('cursorAfter: a socket that started later than the read\'s start keeps its own start as the floor', async (t) => {
  const read = { since: snap('10:20:'), upto: snap('30:30:') };
  const event = { id: 7, xid: 25, read } as unknown as TaskEvent;
  t.equal(cursorAfter(event, null).floor.text, '10:20:');
  t.equal(cursorAfter(event, snap('22:22:')).floor.text, '22:22:', 'the start, seen after the read began');
  t.equal(cursorAfter(event, snap('5:8:')).floor.text, '10:20:', 'an older start does not matter');
});

t.test('unseen: the xids a later snapshot sees and an earlier one does not, around those still running', async (t) => {
  t.same(unseen(snap('10:20:'), snap('10:20:')), { ranges: [], xids: [] }, 'the same snapshot: nothing');
  t.same(unseen(snap('10:20:'), snap('15:30:')), { ranges: [[19, 30]], xids: [] }, '20..29');
  t.same(unseen(snap('10:20:12,15'), snap('12:30:12,22,25,26')), { ranges: [[19, 22], [22, 25], [26, 30]], xids: [15] },
    'around 22, 25 and 26 (still running), 15 ended since, 12 still running');
  t.same(unseen(snap('10:20:'), snap('10:21:20')), { ranges: [], xids: [] }, 'only a transaction still running');
  // every xid from 1 to 40 is in the answer exactly when the later snapshot sees it and the earlier does not
  for (const [earlier, later] of [['10:20:12,15', '12:30:12,22,25,26'], ['5:9:5,6,8', '6:14:6,9,13'], ['3:3:', '3:8:3,4,5,6,7']]) {
    const { ranges, xids } = unseen(snap(earlier as string), snap(later as string));
    for (let xid = 1; xid <= 40; xid++) {
      const inAnswer = xids.includes(xid) || ranges.some(([above, below]) => xid > above && xid < below);
      const expected = visible(snap(later as string), xid) && !visible(snap(earlier as string), xid);
      if (inAnswer !== expected) t.fail(`${earlier} → ${later}: xid ${xid} ${inAnswer ? 'in' : 'not in'} the answer`);
    }
  }
  t.pass('checked xid by xid against visible()');
});
