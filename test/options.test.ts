import Fastify from 'fastify';
import t from 'tap';
import taskEvents, { type TaskEventsOptions } from '../lib/index.js';
import { DEFAULT_MESSAGE_LIMIT, DEFAULT_MESSAGE_TIME, resolveOptions } from '../lib/options.js';

const base = { connectionString: 'postgres://nobody@127.0.0.1:1/none' };

t.test('defaults are the contract\'s', async (t) => {
  const options = resolveOptions(base);
  t.equal(options.messageTime, DEFAULT_MESSAGE_TIME);
  t.equal(DEFAULT_MESSAGE_TIME, 5000);
  t.equal(options.messageLimit, DEFAULT_MESSAGE_LIMIT);
  t.equal(DEFAULT_MESSAGE_LIMIT, 1000);
  t.equal(options.path, '/ws/events/tasks/');
  t.ok(Object.isFrozen(options));
});

t.test('a bad option fails registration with a message naming it', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['messageTime', 0, /"messageTime" must be a positive integer up to 2147483647, got 0/],
    ['messageTime', '5000', /"messageTime" must be a positive integer up to 2147483647, got "5000"/],
    ['messageLimit', 1.5, /"messageLimit" must be a positive integer/],
    ['messageTime', 2 ** 31, /"messageTime" must be a positive integer up to 2147483647/],
    ['tokenTtl', -1, /"tokenTtl" must be a positive integer/],
    ['pollInterval', null, /"pollInterval" must be a positive integer/],
    ['path', 'ws/events', /"path" must be a URL path/],
    ['unknownPathPrefix', 7, /"unknownPathPrefix" must be a URL path/],
    ['authenticate', 'yes', /"authenticate" must be a function/],
    ['rateLimit', 10, /"rateLimit" must be false or \{ max, timeWindow \}/],
    ['rateLimit', { max: 0, timeWindow: 1000 }, /"rateLimit.max" must be a positive integer/],
    ['rateLimit', { max: 5, timeWindow: 'soon' }, /"rateLimit.timeWindow" must be a positive integer/],
    ['migrate', 'yes', /"migrate" must be true or false/],
    ['heartbeatInterval', 0, /"heartbeatInterval" must be a positive integer/],
    ['maxBufferedBytes', -5, /"maxBufferedBytes" must be a positive integer/],
    ['outboxRetention', 'a day', /"outboxRetention" must be a positive integer/],
    ['pruneInterval', 0.5, /"pruneInterval" must be a positive integer/],
    ['messagetime', 100, /unknown option "messagetime"/],
  ];
  for (const [name, value, message] of cases) {
    const app = Fastify();
    await t.rejects(async () => app.register(taskEvents, { ...base, [name]: value } as TaskEventsOptions).ready(), message, `${name}: ${JSON.stringify(value)}`);
    await app.close().catch(() => {});
  }
});

t.test('exactly one of connectionString and pool', async (t) => {
  t.throws(() => resolveOptions({}), /exactly one of the options "connectionString" and "pool"/);
  t.throws(() => resolveOptions({ connectionString: '' }), /"connectionString" must be a non-empty string/);
  t.throws(() => resolveOptions({ ...base, pool: {} as never }), /"pool" must be a pg.Pool/);
});
