import Fastify from 'fastify';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import taskEvents, { HostErrors, OptionError, OPTIONS, type TaskEventsOptions } from '../lib/index.js';
import { resolveOptions } from '../lib/options.js';

const base = { connectionString: 'postgres://nobody@127.0.0.1:1/none' };

t.test('defaults are the contract\'s', async (t) => {
  const options = resolveOptions(base);
  t.equal(options.messageTime, 5000);
  t.equal(options.messageLimit, 1000);
  t.equal(options.path, '/ws/events/tasks/');
  t.same(options.rateLimit, { max: 60, timeWindow: 60_000 });
  t.ok(Object.isFrozen(options));
  t.ok(Object.isFrozen(options.rateLimit));
  for (const [name, spec] of Object.entries(OPTIONS)) {
    if (!(name in base)) t.equal(options[name as keyof typeof options], spec.default, `${name}: the table's default`);
  }
});

t.test('a field left out of rateLimit keeps its default; the result is frozen', async (t) => {
  const { rateLimit } = resolveOptions({ ...base, rateLimit: { timeWindow: 1000 } });
  t.same(rateLimit, { max: 60, timeWindow: 1000 });
  t.ok(Object.isFrozen(rateLimit));
  t.equal(resolveOptions({ ...base, rateLimit: false }).rateLimit, false);
  t.equal(resolveOptions({ ...base, unknownPathPrefix: false }).unknownPathPrefix, false);
});

t.test('a bad option is an OptionError with the code FST_TASK_EVENTS_OPTION', async (t) => {
  t.equal(OptionError, HostErrors.OPTION, 'the same constructor as HostErrors.OPTION');
  const app = Fastify();
  const error = await app.register(taskEvents, { ...base, messageLimit: 0 }).ready().then(() => null, (error: unknown) => error);
  await app.close().catch(() => {});
  t.ok(error instanceof OptionError);
  t.match(error, {
    code: 'FST_TASK_EVENTS_OPTION',
    message: 'fastify-task-events: option "messageLimit" must be a positive integer up to 2147483647, got 0',
  });
  t.throws(() => resolveOptions({ ...base, rateLimit: { max: 0 } }), { code: 'FST_TASK_EVENTS_OPTION', message: /"rateLimit.max" must be a positive integer up to 2147483647, got 0$/ });
});

t.test('a pool that is not one is not repeated in the message: it may hold a password', async (t) => {
  t.throws(() => resolveOptions({ pool: { connectionString: 'postgres://app:hunter2@db/app' } as never }), { message: 'fastify-task-events: option "pool" must be a pg.Pool' });
});

t.test('README lists the environment variables of the options table', async (t) => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf("### The example server's environment"), readme.indexOf('## How it works'));
  const variables = Object.values(OPTIONS).flatMap((spec) => ('env' in spec ? (typeof spec.env === 'string' ? [spec.env] : Object.values(spec.env)) : []));
  t.same([...section.matchAll(/`(TASK_EVENTS_\w+)`/g)].map(([, name]) => name).sort(), variables.sort());
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
    ['messagetime', 100, /unknown option "messagetime"; known options: connectionString, pool, messageTime, messageLimit, path, unknownPathPrefix, authenticate, tokenTtl, rateLimit, pollInterval, readBatchSize, migrate, heartbeatInterval, maxBufferedBytes, outboxRetention, pruneInterval, allowedOrigins, requireOrigin, maxConnectionsPerUser, maxConnectionsPerIp, maxConnections, metrics$/],
    ['unknownPathPrefix', true, /"unknownPathPrefix" must be a URL path starting with "\/", got true/],
    ['rateLimit', null, /"rateLimit" must be false or \{ max, timeWindow \}, got null/],
    ['readBatchSize', 0, /"readBatchSize" must be a positive integer/],
    ['metrics', true, /"metrics" must be false or \{ registry, prefix \}, got true/],
    ['metrics', { prefix: '9lives_' }, /"metrics.prefix" must be a metric name prefix: letters, digits, "_" and ":", not starting with a digit \(or ""\), got "9lives_"/],
    ['metrics', { registry: { metrics: 'no' } }, /"metrics.registry" must be a prom-client Registry, got \{"metrics":"no"\}$/],
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
