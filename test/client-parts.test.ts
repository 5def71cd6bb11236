// The client's pure parts, without a server: backoff, the connection URL, frames, the iterator's
// buffer, the emitter, and the options it refuses.
import t from 'tap';
import WebSocket from 'ws';
import { BASE_DELAY, MAX_DELAY, RATE_LIMIT_DELAY, backoffDelay, rateLimitDelay } from '../client/backoff.js';
import { Emitter } from '../client/emitter.js';
import { createTaskEventsClient, TaskEventsError, type TaskEvent, type WebSocketConstructor } from '../client/index.js';
import { bufferedIterator } from '../client/iterator.js';
import { connectionUrl, parseFrame, PROTOCOL } from '../client/protocol.js';

// Compile-time: both implementations the client documents fit its WebSocket option.
const _ws: WebSocketConstructor = WebSocket;
const _dom: WebSocketConstructor | undefined = globalThis.WebSocket;

const event = (taskId: number): TaskEvent => ({ task_id: taskId, object_class_id: 1, event: 'task_created', timestamp: '2025-01-16T11:07:57.954470+00:00' });

t.test('backoff: attempt n waits within [0, min(30 s, 0.5 s·2ⁿ)), full jitter', async (t) => {
  t.equal(backoffDelay(0, () => 0), 0);
  t.equal(backoffDelay(0, () => 0.999999), 0.999999 * BASE_DELAY);
  for (let attempt = 0; attempt < 12; attempt++) {
    const window = Math.min(MAX_DELAY, BASE_DELAY * 2 ** attempt);
    t.equal(backoffDelay(attempt, () => 0.5), window / 2, `attempt ${attempt}: half of ${window} ms at random 0.5`);
  }
  t.equal(backoffDelay(1_000, () => 0.999999), 0.999999 * MAX_DELAY, 'a huge attempt stays capped');
  const outside = Array.from({ length: 1_000 }, (_, i) => i % 10)
    .filter((attempt) => {
      const delay = backoffDelay(attempt);
      return delay < 0 || delay >= Math.min(MAX_DELAY, BASE_DELAY * 2 ** attempt);
    });
  t.same(outside, [], 'Math.random: every delay within its window');
});

t.test('after ERR_RATE_LIMIT_EXCEEDED the wait is at least 5 s, jittered, and bounded', async (t) => {
  t.equal(rateLimitDelay(0, () => 0), RATE_LIMIT_DELAY);
  t.equal(rateLimitDelay(0, () => 0.5), RATE_LIMIT_DELAY * 1.5, 'the jitter window is at least 5 s wide');
  t.equal(rateLimitDelay(50, () => 0.5), RATE_LIMIT_DELAY + MAX_DELAY / 2, 'and grows to 30 s');
  const delays = Array.from({ length: 200 }, (_, i) => rateLimitDelay(i % 8));
  t.ok(delays.every((delay) => delay >= RATE_LIMIT_DELAY && delay < RATE_LIMIT_DELAY + MAX_DELAY));
  t.ok(new Set(delays).size > 100, 'jittered');
});

t.test('the connection URL: token, filters, cursor, and a query already there', async (t) => {
  const token = '6f1c3b1e-8a44-4a39-9e0a-1d2b3c4d5e6f';
  const parse = (url: string): { base: string; query: Record<string, string> } => {
    const parsed = new URL(url);
    return { base: `${parsed.protocol}//${parsed.host}${parsed.pathname}`, query: Object.fromEntries(parsed.searchParams) };
  };
  t.same(parse(connectionUrl('wss://host/ws/events/tasks/', token, {})), { base: 'wss://host/ws/events/tasks/', query: { uuid: token } });
  t.same(parse(connectionUrl('wss://host/ws/events/tasks/?tenant=acme&uuid=stale', token, {
    objectClassIds: [1, 2], eventTypes: ['task_created', 'task_deleted'],
  }, 'c1-_x')), {
    base: 'wss://host/ws/events/tasks/',
    query: { tenant: 'acme', uuid: token, object_class_ids: '1,2', event_types: 'task_created,task_deleted', cursor: 'c1-_x' },
  }, 'keeps the query, replaces a stale uuid, adds filters and cursor');
  t.same(parse(connectionUrl('ws://host/ws/events/tasks/', token, { objectClassIds: [], eventTypes: [] })).query, { uuid: token }, 'empty filters are left out');
  t.match(connectionUrl('https://host/ws/events/tasks/', token, {}), /^wss:\/\/host\//, 'https becomes wss');
  t.match(connectionUrl('http://host/ws/events/tasks/', token, {}), /^ws:\/\/host\//, 'http becomes ws');
  t.throws(() => connectionUrl('/ws/events/tasks/', token, {}), TypeError, 'a relative URL needs a page (a browser)');
});

t.test('frames: the four v2 types, unknown types, and what breaks the protocol', async (t) => {
  t.same(parseFrame('{"type":"ready","cursor":"a"}'), { type: 'ready', cursor: 'a' });
  t.same(parseFrame('{"type":"cursor","cursor":"b"}'), { type: 'cursor', cursor: 'b' });
  t.same(parseFrame(JSON.stringify({ type: 'events', events: [event(1)], cursor: 'c' })), { type: 'events', events: [event(1)], cursor: 'c' });
  t.same(parseFrame('{"type":"error","error_code":"ERR_INVALID_UUID","detail":"A valid UUID is required."}'),
    { type: 'error', error_code: 'ERR_INVALID_UUID', detail: 'A valid UUID is required.' });
  t.same(parseFrame('{"type":"notice","text":"hello"}'), { type: 'other' }, 'a type a newer server may add');
  for (const broken of ['not json', '[]', '[{"task_id":1}]', 'null', '42', '{"cursor":"a"}', '{"type":"ready"}',
    '{"type":"events","cursor":"a"}', '{"type":"events","events":[],"cursor":7}', '{"type":"error"}']) {
    t.equal(parseFrame(broken), undefined, broken);
  }
  t.equal(PROTOCOL, 'task-events.v2');
});

t.test('the iterator yields what was pushed, in order, buffering what is not pulled yet', async (t) => {
  let push: (item: number) => void = () => {};
  let end: () => void = () => {};
  let subscribed = true;
  const iterator = bufferedIterator<number>((p, e) => {
    [push, end] = [p, e];
    return () => (subscribed = false);
  }, () => undefined);
  push(1);
  push(2);
  t.same(await iterator.next(), { done: false, value: 1 });
  t.same(await iterator.next(), { done: false, value: 2 });
  const waiting = [iterator.next(), iterator.next()];
  push(3);
  push(4);
  push(5);
  t.same(await Promise.all(waiting), [{ done: false, value: 3 }, { done: false, value: 4 }], 'pulls made before the pushes get them in order');
  push(6);
  end();
  t.same(await iterator.next(), { done: false, value: 5 });
  t.same(await iterator.next(), { done: false, value: 6 }, 'ending yields the buffer first');
  t.same(await iterator.next(), { done: true, value: undefined });
  t.notOk(subscribed, 'unsubscribed at the end');
});

t.test('the iterator wakes every waiting pull, ends on end(), and throws the failure once', async (t) => {
  let end: () => void = () => {};
  const failure = new Error('terminal');
  const iterator = bufferedIterator<number>((_p, e) => {
    end = e;
    return () => {};
  }, () => failure);
  const pulls = [iterator.next(), iterator.next()];
  end();
  const settled = await Promise.allSettled(pulls);
  t.same(settled.map((result) => result.status), ['rejected', 'fulfilled'], 'the first pull gets the error, the next the end');
  t.equal((settled[0] as PromiseRejectedResult).reason, failure);
  t.same(await iterator.next(), { done: true, value: undefined });
});

t.test('break (return) drops the buffer and unsubscribes; an ended iterator ends at once', async (t) => {
  let push: (item: number) => void = () => {};
  let subscribed = true;
  const iterator = bufferedIterator<number>((p) => {
    push = p;
    return () => (subscribed = false);
  }, () => new Error('not thrown after a break'));
  push(1);
  for await (const item of iterator) {
    t.equal(item, 1);
    break;
  }
  t.notOk(subscribed);
  t.same(await iterator.next(), { done: true, value: undefined });
  const ended = bufferedIterator<number>(() => () => {}, () => undefined, true);
  t.same(await ended.next(), { done: true, value: undefined });
});

t.test('the emitter: typed listeners, unsubscribe, off, each listener once', async (t) => {
  class Source extends Emitter<{ tick: (n: number, label: string) => void }> {
    fire(n: number): void {
      this.emit('tick', n, `#${n}`);
    }
  }
  const source = new Source();
  const seen: string[] = [];
  const listener = (n: number, label: string): void => void seen.push(`a${n}${label}`);
  source.on('tick', listener);
  source.on('tick', listener);
  const unsubscribe = source.on('tick', (n) => void seen.push(`b${n}`));
  source.fire(1);
  unsubscribe();
  source.fire(2);
  source.off('tick', listener);
  source.fire(3);
  t.same(seen, ['a1#1', 'b1', 'a2#2']);
});

t.test('createTaskEventsClient refuses unusable options, naming them', async (t) => {
  const getToken = async (): Promise<string> => 'token';
  t.throws(() => createTaskEventsClient({ url: 'ws://host/', getToken }), { name: 'TaskEventsError', code: 'ERR_INVALID_OPTION', message: /`WebSocket`.*`ws` package/ },
    'Node 20 has no globalThis.WebSocket');
  t.throws(() => createTaskEventsClient({ url: 'ws://host/', getToken: 'token' as never, WebSocket }), { code: 'ERR_INVALID_OPTION', message: /`getToken`/ });
  t.throws(() => createTaskEventsClient({ url: 42 as never, getToken, WebSocket }), { code: 'ERR_INVALID_OPTION', message: /`url`/ });
  t.ok(new TaskEventsError('ERR_INVALID_UUID', 'x') instanceof Error);
  t.notOk('cause' in new TaskEventsError('ERR_INVALID_UUID', 'x'), 'no cause property unless there is one');
});
