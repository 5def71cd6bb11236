// The client's state machine without a server: a WebSocket double scripted by each test stands
// where the socket would be (what the real server does is test/client.test.ts's part), and
// node:test's mock timers stand for the clock, so that backoff waits are asserted to the
// millisecond instead of slept through. Math.random is pinned to 0.5: attempt n waits half of its
// window, 250 ms · 2ⁿ.
import t, { type Test } from 'tap';
import { mock } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import {
  createTaskEventsClient, type ClientStatus, type GapInfo, type TaskEvent, type TaskEventsClient,
  type RetryInfo, type TaskEventsClientOptions, type TaskEventsError, type WebSocketLike,
} from '../client/index.js';

const PROTOCOL = 'task-events.v2';

/** One socket the client opened; the test plays the server's part on it. */
class SocketDouble implements WebSocketLike {
  protocol = '';
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onerror: WebSocketLike['onerror'] = null;
  onclose: WebSocketLike['onclose'] = null;
  closedWith: number | undefined;
  readonly query: URLSearchParams;

  constructor(readonly url: string, readonly protocols: string) {
    this.query = new URL(url).searchParams;
  }

  close(code?: number): void {
    this.closedWith = code;
  }

  /** The 101, with the subprotocol the server selected. */
  open(protocol = PROTOCOL): void {
    this.protocol = protocol;
    this.onopen?.({});
  }

  send(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  ready(cursor: string): void {
    this.open();
    this.send({ type: 'ready', cursor });
  }

  /** What the server does after an error frame: close 1000. */
  refuse(code: string): void {
    this.send({ type: 'error', error_code: code, detail: `detail of ${code}` });
    this.onclose?.({ code: 1000 });
  }

  /** A network loss, an HTTP 500 before open, a restart: error then close. */
  lose(code = 1006): void {
    this.onerror?.({ type: 'error' });
    this.onclose?.({ code });
  }
}

const event = (taskId: number): TaskEvent => ({ task_id: taskId, object_class_id: 1, event: 'task_created', timestamp: '2025-01-16T11:07:57.954470+00:00' });

interface Harness {
  client: TaskEventsClient;
  sockets: SocketDouble[];
  /** The socket of the latest attempt. */
  socket: () => SocketDouble;
  statuses: ClientStatus[];
  errors: TaskEventsError[];
  gaps: GapInfo[];
  retries: RetryInfo[];
  /** 'events:<ids>@<cursor>' and 'cursor:<cursor>', in the order they happened. */
  log: string[];
  tokens: number;
  /** Advances the clock by `ms` and lets the client's promises run. */
  tick: (ms: number) => Promise<void>;
}

t.beforeEach((t) => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.capture(Math, 'random', () => 0.5);
});
t.afterEach(() => mock.timers.reset());

async function start(t: Test, options: Partial<TaskEventsClientOptions> = {}): Promise<Harness> {
  const sockets: SocketDouble[] = [];
  const harness: Harness = {
    client: undefined as unknown as TaskEventsClient,
    sockets,
    socket: () => sockets.at(-1) as SocketDouble,
    statuses: [], errors: [], gaps: [], retries: [], log: [], tokens: 0,
    tick: async (ms) => {
      mock.timers.tick(ms);
      await turn();
    },
  };
  const client = createTaskEventsClient({
    url: 'ws://host/ws/events/tasks/',
    getToken: async () => `token-${++harness.tokens}`,
    onCursor: (cursor) => harness.log.push(`cursor:${cursor}`),
    WebSocket: class extends SocketDouble {
      constructor(url: string, protocols: string) {
        super(url, protocols);
        sockets.push(this);
      }
    },
    ...options,
  });
  harness.client = client;
  client.on('status', (status) => harness.statuses.push(status));
  client.on('error', (error) => harness.errors.push(error));
  client.on('gap', (info) => harness.gaps.push(info));
  client.on('retry', (info) => harness.retries.push(info));
  client.on('events', (events, { cursor }) => harness.log.push(`events:${events.map((e) => e.task_id)}@${cursor}`));
  t.teardown(() => client.close());
  await turn();
  return harness;
}

t.test('connects at once with a fresh token and the v2 subprotocol; open after ready', async (t) => {
  const h = await start(t, { objectClassIds: [1, 2], eventTypes: ['task_created'] });
  t.equal(h.sockets.length, 1, 'the first attempt is immediate');
  t.equal(h.socket().protocols, PROTOCOL);
  t.same(Object.fromEntries(h.socket().query), { uuid: 'token-1', object_class_ids: '1,2', event_types: 'task_created' });
  t.equal(h.client.status, 'connecting');
  h.socket().open();
  t.equal(h.client.status, 'connecting', 'not open before ready');
  h.socket().send({ type: 'ready', cursor: 'c0' });
  t.equal(h.client.status, 'open');
  t.same(h.statuses, ['open']);
  t.same(h.log, ['cursor:c0']);
});

t.test('events in order; onCursor after the events of its message, only when the cursor moves', async (t) => {
  const h = await start(t);
  h.socket().ready('c0');
  h.socket().send({ type: 'events', events: [event(1), event(2)], cursor: 'c1' });
  h.socket().send({ type: 'cursor', cursor: 'c2' });
  h.socket().send({ type: 'cursor', cursor: 'c2' });
  h.socket().send({ type: 'notice', text: 'a type from a newer server' });
  h.socket().send({ type: 'events', events: [event(3)], cursor: 'c3' });
  t.same(h.log, ['cursor:c0', 'events:1,2@c1', 'cursor:c1', 'cursor:c2', 'events:3@c3', 'cursor:c3']);
  t.equal(h.client.cursor, 'c3');
  t.equal(h.sockets.length, 1, 'an unknown frame type is skipped, not a reason to reconnect');
});

t.test('a lost connection: reconnecting, backoff, resume with the last cursor and a fresh token', async (t) => {
  const h = await start(t, { cursor: 'saved' });
  t.equal(h.socket().query.get('cursor'), 'saved', 'starts from the cursor given');
  h.socket().ready('saved');
  t.same(h.log, [], 'the same cursor is not reported again');
  h.socket().send({ type: 'events', events: [event(1)], cursor: 'c1' });
  h.socket().onclose?.({ code: 1001 });
  t.equal(h.client.status, 'reconnecting');
  t.same(h.retries, [{ reason: 'closed', code: 1001, attempt: 0, delay: 250 }], "'retry' says why and when");
  await h.tick(249);
  t.equal(h.sockets.length, 1, 'attempt 0 waits random · 500 ms');
  await h.tick(1);
  t.equal(h.sockets.length, 2);
  t.same(Object.fromEntries(h.socket().query), { uuid: 'token-2', cursor: 'c1' });
  h.socket().ready('c1');
  t.same(h.statuses, ['open', 'reconnecting', 'open']);
});

t.test('backoff doubles per failed attempt up to 30 s and starts over after a stable connection', async (t) => {
  const h = await start(t);
  const waits: number[] = [];
  for (let attempt = 0; attempt < 9; attempt++) {
    h.socket().lose(); // e.g. an HTTP 500 refusal: error before open
    const before = h.sockets.length;
    let waited = 0;
    while (h.sockets.length === before) {
      await h.tick(50);
      waited += 50;
    }
    waits.push(waited);
  }
  t.same(waits, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  t.same(h.retries.map((retry) => [retry.attempt, retry.delay]), waits.map((wait, attempt) => [attempt, wait]));
  t.match(h.retries[0], { reason: 'error', error: { type: 'error' } }, 'the error event of a failed socket');
  h.socket().ready('c0');
  await h.tick(9_999);
  h.socket().lose();
  await h.tick(14_999);
  t.equal(h.sockets.length, 10, 'open less than 10 s: not stable, the backoff goes on');
  await h.tick(1);
  h.socket().ready('c0');
  await h.tick(10_000);
  h.socket().lose();
  await h.tick(250);
  t.equal(h.sockets.length, 12, 'open 10 s: stable, back to the first step');
});

t.test('ERR_RATE_LIMIT_EXCEEDED: retried after at least 5 s', async (t) => {
  const h = await start(t);
  h.socket().refuse('ERR_RATE_LIMIT_EXCEEDED');
  t.equal(h.sockets[0]?.closedWith, 1000);
  t.equal(h.client.status, 'reconnecting');
  t.match(h.retries, [{ reason: 'ERR_RATE_LIMIT_EXCEEDED', delay: 7_500 }]);
  await h.tick(7_499);
  t.equal(h.sockets.length, 1, '5 s + random · max(5 s, the backoff window)');
  await h.tick(1);
  t.equal(h.sockets.length, 2);
  t.same(h.errors, []);
});

for (const code of ['ERR_INCORRECT_URL', 'ERR_INVALID_OBJECT_CLASS_IDS', 'ERR_INVALID_EVENT_TYPES', 'RECEIVE_NOT_SUPPORTED']) {
  t.test(`${code} is terminal: 'error' with the code, closed, no reconnect`, async (t) => {
    const h = await start(t);
    const iterated = (async () => {
      for await (const _events of h.client) t.fail('no events');
    })();
    h.socket().refuse(code);
    t.equal(h.client.status, 'closed');
    t.same(h.statuses, ['closed']);
    t.equal(h.errors.length, 1);
    t.match(h.errors[0], { name: 'TaskEventsError', code, detail: `detail of ${code}`, message: new RegExp(`detail of ${code}`) });
    t.equal(h.socket().closedWith, 1000);
    await t.rejects(iterated, { code }, 'the iterator throws the terminal error');
    await h.tick(60_000);
    t.equal(h.sockets.length, 1);
  });
}

t.test('ERR_INVALID_UUID: retried with a fresh token; five in a row are terminal; a ready resets the count', async (t) => {
  const h = await start(t);
  const refuseAndWait = async (): Promise<void> => {
    h.socket().refuse('ERR_INVALID_UUID');
    await h.tick(30_000);
  };
  for (let i = 0; i < 4; i++) await refuseAndWait();
  h.socket().ready('c0');
  for (let i = 0; i < 4; i++) await refuseAndWait();
  t.equal(h.client.status, 'reconnecting', 'four in a row after a ready: still trying');
  t.same(h.sockets.map((socket) => socket.query.get('uuid')), Array.from({ length: 9 }, (_, i) => `token-${i + 1}`), 'a fresh token each time');
  h.socket().refuse('ERR_INVALID_UUID');
  t.equal(h.client.status, 'closed');
  t.match(h.errors, [{ code: 'ERR_INVALID_UUID' }]);
});

t.test('ERR_CURSOR_EXPIRED and ERR_INVALID_CURSOR: a gap, then a fresh start without the cursor', async (t) => {
  const h = await start(t, { cursor: 'old' });
  h.socket().refuse('ERR_CURSOR_EXPIRED');
  t.same(h.gaps, [{ reason: 'cursor_expired', cursor: 'old' }]);
  t.equal(h.client.cursor, undefined);
  await h.tick(250);
  t.equal(h.socket().query.get('cursor'), null, 'reconnects fresh');
  h.socket().ready('new');
  t.same(h.log, ['cursor:new']);
  const other = await start(t, { cursor: 'tampered' });
  other.socket().refuse('ERR_INVALID_CURSOR');
  t.same(other.gaps, [{ reason: 'invalid_cursor', cursor: 'tampered' }]);
  t.same(other.errors, []);
});

t.test('getToken answering 401 or 403 is terminal, with its error as the cause; other failures are retried', async (t) => {
  for (const failure of [{ status: 401 }, { statusCode: 403 }]) {
    const h = await start(t, { getToken: () => Promise.reject(Object.assign(new Error('refused'), failure)) });
    t.equal(h.client.status, 'closed');
    t.match(h.errors, [{ code: 'ERR_TOKEN_REJECTED', cause: failure }]);
    t.equal(h.sockets.length, 0);
  }
  let calls = 0;
  const h = await start(t, {
    getToken: async () => {
      if (++calls < 3) throw Object.assign(new Error('bad gateway'), { status: 502 });
      return 'token';
    },
  });
  t.equal(h.client.status, 'reconnecting');
  t.match(h.retries, [{ reason: 'token', error: { status: 502 } }]);
  await h.tick(250);
  await h.tick(500);
  t.equal(calls, 3);
  t.equal(h.sockets.length, 1);
  t.same(h.errors, []);
});

t.test('a server that does not select task-events.v2 (v1 only) is terminal', async (t) => {
  const h = await start(t);
  h.socket().open('');
  t.equal(h.client.status, 'closed');
  t.match(h.errors, [{ code: 'ERR_PROTOCOL_NOT_SELECTED' }]);
  t.equal(h.socket().closedWith, 1000);
});

t.test('a frame that breaks the protocol drops the connection and retries', async (t) => {
  const h = await start(t);
  h.socket().ready('c0');
  h.socket().onmessage?.({ data: '[{"task_id":1}]' });
  t.equal(h.sockets[0]?.closedWith, 1000);
  t.equal(h.client.status, 'reconnecting');
  await h.tick(250);
  t.equal(h.socket().query.get('cursor'), 'c0');
});

t.test('a url function is called for each attempt', async (t) => {
  const hosts = ['ws://a/ws/events/tasks/', 'ws://b/ws/events/tasks/'];
  let calls = 0;
  const h = await start(t, { url: () => hosts[calls++ % 2] as string });
  h.socket().lose();
  await h.tick(250);
  t.same(h.sockets.map((socket) => new URL(socket.url).host), ['a', 'b']);
  const bad = await start(t, { url: () => 'not a url' });
  t.match(bad.errors, [{ code: 'ERR_INVALID_OPTION', cause: TypeError }]);
});

t.test('close() stops everything: the pending wait, a pending getToken, the socket; the iterator ends', async (t) => {
  const h = await start(t);
  const received: number[][] = [];
  const iterated = (async () => {
    for await (const events of h.client) received.push(events.map((e) => e.task_id));
  })();
  h.socket().ready('c0');
  h.socket().send({ type: 'events', events: [event(1)], cursor: 'c1' });
  h.client.close();
  t.equal(h.socket().closedWith, 1000);
  t.equal(h.client.status, 'closed');
  await iterated;
  t.same(received, [[1]], 'the iterator yields what it buffered, then ends');
  h.client.close();
  t.same(h.statuses, ['open', 'closed'], 'close() twice: closed once');

  const waiting = await start(t);
  waiting.socket().lose();
  waiting.client.close();
  await waiting.tick(60_000);
  t.equal(waiting.sockets.length, 1, 'the pending reconnect is cancelled');

  let release: (token: string) => void = () => {};
  const slow = await start(t, { getToken: () => new Promise<string>((resolve) => (release = resolve)) });
  slow.client.close();
  release('late');
  await slow.tick(0);
  t.equal(slow.sockets.length, 0, 'a token that arrives after close() opens nothing');

  const early = await start(t);
  early.client.close();
  t.equal(early.tokens, 1);
  const never = createTaskEventsClient({ url: 'ws://host/', getToken: async () => t.fail('no token after close()') as never, WebSocket: SocketDouble });
  never.close();
  await turn();
  t.same(await never[Symbol.asyncIterator]().next(), { done: true, value: undefined }, 'an iterator of a closed client ends at once');
});

t.test('a silent connection is dropped and resumed: no ready within 30 s, or no frame for 75 s once open', async (t) => {
  const h = await start(t);
  h.socket().open(); // a 101, then nothing
  await h.tick(29_999);
  t.equal(h.sockets.length, 1, 'still waiting for ready');
  await h.tick(1);
  t.match(h.retries.at(-1), { reason: 'silent' }, 'given up after 30 s');
  await h.tick(h.retries.at(-1)?.delay ?? 0);
  t.equal(h.sockets.length, 2, 'a new attempt');
  h.socket().ready('c0');
  await h.tick(74_000);
  h.socket().send({ type: 'cursor', cursor: 'c1' }); // a frame resets the watch
  await h.tick(74_000);
  t.equal(h.sockets.length, 2, 'frames keep it alive');
  await h.tick(1000);
  t.match(h.retries.at(-1), { reason: 'silent' }, 'no frame for 75 s: dropped');
  t.equal(h.sockets[1]?.closedWith, 1000);
  await h.tick(h.retries.at(-1)?.delay ?? 0);
  t.equal(h.socket().query.get('cursor'), 'c1', 'resumed from its last cursor');
});
