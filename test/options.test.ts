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
    ['allowedOrigins', 'https://app.example.com', /"allowedOrigins" must be an array of origins like "https:\/\/app.example.com" \(scheme:\/\/host\[:port\], no path\), got "https:\/\/app.example.com"/],
    ['allowedOrigins', ['https://app.example.com/path'], /"allowedOrigins" must be an array of origins/],
    ['allowedOrigins', ['https://app.example.com/'], /"allowedOrigins" must be an array of origins/],
    ['allowedOrigins', ['https://*.example.com'], /"allowedOrigins" must be an array of origins/],
    ['allowedOrigins', ['*'], /"allowedOrigins" must be an array of origins/],
    ['allowedOrigins', ['ftp://files.example.com'], /"allowedOrigins" must be an array of origins/],
    ['allowedOrigins', [42], /"allowedOrigins" must be an array of origins/],
    ['requireOrigin', 'yes', /"requireOrigin" must be true or false/],
    ['maxConnectionsPerUser', -1, /"maxConnectionsPerUser" must be an integer from 0 \(no cap\) to 2147483647, got -1/],
    ['maxConnectionsPerIp', 1.5, /"maxConnectionsPerIp" must be an integer from 0 \(no cap\)/],
    ['maxConnections', '100', /"maxConnections" must be an integer from 0 \(no cap\)/],
    ['messagetime', 100, /unknown option "messagetime"/],
  ];
  for (const [name, value, message] of cases) {
    const app = Fastify();
    await t.rejects(async () => app.register(taskEvents, { ...base, [name]: value } as TaskEventsOptions).ready(), message, `${name}: ${JSON.stringify(value)}`);
    await app.close().catch(() => {});
  }
});

t.test('security defaults: every origin, no Origin required, generous but finite caps', async (t) => {
  const options = resolveOptions(base);
  t.equal(options.allowedOrigins, null);
  t.equal(options.requireOrigin, false);
  t.same([options.maxConnectionsPerUser, options.maxConnectionsPerIp, options.maxConnections], [100, 1000, 10_000]);
  const listed = resolveOptions({ ...base, allowedOrigins: ['HTTPS://App.Example.com', 'https://app.example.com:443', 'http://localhost:8080'] });
  t.same([...(listed.allowedOrigins ?? [])], ['https://app.example.com', 'http://localhost:8080'], 'lower-cased, default port dropped, as browsers send it');
  t.same([...(resolveOptions({ ...base, allowedOrigins: [] }).allowedOrigins ?? ['x'])], [], 'an empty list allows no Origin at all');
});

t.test('exactly one of connectionString and pool', async (t) => {
  t.throws(() => resolveOptions({}), /exactly one of the options "connectionString" and "pool"/);
  t.throws(() => resolveOptions({ connectionString: '' }), /"connectionString" must be a non-empty string/);
  t.throws(() => resolveOptions({ ...base, pool: {} as never }), /"pool" must be a pg.Pool/);
});
