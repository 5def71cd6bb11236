// The example's page as the server serves it (no browser: test/browser/ drives one): the files
// of example/public/ under a same-origin CSP, the script bundled with the client, and the two
// lists the page offers choices from, scoped to the caller's environment.
import t from 'tap';
import { buildApp } from '../example/app.js';
import { createTestDatabase } from '../harness/db.js';

const db = await createTestDatabase(t, { schema: false });
const app = await buildApp({ databaseUrl: db.url, logLevel: 'silent', taskEvents: { rateLimit: false } });
t.teardown(() => app.close());

const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers });

t.test('GET / serves the page; everything it loads comes from this server, under a same-origin CSP', async (t) => {
  const page = await get('/');
  t.equal(page.statusCode, 200);
  t.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
  t.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'/);
  const loaded = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1] as string).filter((url) => !url.startsWith('#'));
  t.same(loaded.sort(), ['/favicon.svg', '/page.css', '/page.js']);
  for (const url of loaded) {
    const response = await get(url);
    t.equal(response.statusCode, 200, url);
    t.equal(response.headers['content-security-policy'], page.headers['content-security-policy'], `${url}: the same CSP`);
  }
});

t.test('/page.js is one ES module with the client bundled in', async (t) => {
  const script = await get('/page.js');
  t.match(script.headers['content-type'], /^text\/javascript/);
  t.match(script.body, 'task-events.v2', 'the client (its subprotocol) is in the bundle');
  t.match(script.body, 'sessionStorage', 'the page keeps its cursor');
  t.notMatch(script.body, /^\s*import\s/m, 'nothing left to import');
});

t.test('GET /api/object-classes/ and /api/users/: the caller\'s environment only, never an API key', async (t) => {
  const list = async (url: string, key: string) => (await get(url, { authorization: `Token ${key}` })).json();
  t.same(await list('/api/object-classes/', 'demo-key-1'), { object_classes: [{ id: 1, name: 'Bug' }, { id: 2, name: 'Feature' }, { id: 3, name: 'Chore' }] });
  t.same(await list('/api/object-classes/', 'demo-key-2'), { object_classes: [{ id: 4, name: 'Ticket' }] });
  t.same(await list('/api/users/', 'demo-key-1'), { users: [{ id: 1, name: 'alice' }] });
  t.same(await list('/api/users/', 'demo-key-2'), { users: [{ id: 2, name: 'bob' }] });
  for (const url of ['/api/object-classes/', '/api/users/']) {
    const response = await get(url, { authorization: 'Token wrong-key' });
    t.equal(response.statusCode, 401, `${url} without a valid key`);
  }
});
