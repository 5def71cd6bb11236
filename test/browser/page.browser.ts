// The example's page (`GET /`) in a real browser: Debian's Chromium, driven by playwright-core,
// against the example server as `npm start` runs it, on a database of its own. The page loads
// clean; every write's events appear as they arrive (psql's and the page's own); another tenant's
// never do; filters reconnect the client; a server restart and a reload are survived without a
// gap, and the status says so; a phone-sized screen works. Run by `npm run test:browser`.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Locator, type Page } from 'playwright-core';
import t from 'tap';
import { createTestDatabase } from '../../harness/db.js';
import { ExampleServer } from './example-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOTS = fileURLToPath(new URL('./screenshots/', import.meta.url));
/** The deadline of one condition (an event line, a status), ms. */
const WAIT = 15_000;
/** A restarted server is reached at the client's next attempt: its backoff may have grown meanwhile. */
const RECONNECT_WAIT = 45_000;
const ENV = { TASK_EVENTS_MESSAGE_TIME_MS: '200', TASK_EVENTS_RATE_LIMIT_MAX: '0' };

if (!existsSync(CHROMIUM)) {
  throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (Debian's), or set CHROMIUM_PATH`);
}
await mkdir(SCREENSHOTS, { recursive: true });

/** The file's own teardowns (a subtest's `t` tears down at the end of that test). */
const root = t;
const db = await createTestDatabase(t, { migrate: false }); // the example creates its own schema
let server = await ExampleServer.start(t, { databaseUrl: db.url, port: 0, env: ENV });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
t.teardown(() => browser.close());

/** A page and what it did: console errors, requested URLs, WebSocket URLs. */
interface Watched {
  page: Page;
  errors: string[];
  urls: string[];
  sockets: string[];
  /** The text frames the page received, as sent. */
  frames: string[];
  /** While true, the browser's own reports of a refused connection are expected (the server is down). */
  outage: boolean;
}

const REFUSED = /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed/;

async function watch(context: BrowserContext): Promise<Watched> {
  const page = await context.newPage();
  const watched: Watched = { page, errors: [], urls: [], sockets: [], frames: [], outage: false };
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    if (watched.outage && REFUSED.test(`${message.text()} ${message.location().url}`)) return;
    watched.errors.push(message.text());
  });
  page.on('pageerror', (error) => watched.errors.push(`uncaught: ${error.message}`));
  page.on('request', (request) => watched.urls.push(request.url()));
  page.on('websocket', (socket) => {
    watched.sockets.push(socket.url());
    socket.on('framereceived', ({ payload }) => watched.frames.push(String(payload)));
  });
  return watched;
}

/** The lines of an event about a task in the messages list. */
const eventLine = (page: Page, event: string, taskId: number): Locator =>
  page.locator(`#messages li[data-event="${event}"][data-task-id="${taskId}"]`);

async function shown(locator: Locator, timeout = WAIT): Promise<void> {
  await locator.first().waitFor({ state: 'attached', timeout });
}

async function statusSays(page: Page, text: RegExp, timeout = WAIT): Promise<void> {
  await page.locator('#status-text').filter({ hasText: text }).waitFor({ timeout });
}

/** Every event line on the page, oldest first, as "event task_id". */
function pageLines(page: Page): Promise<string[]> {
  return page.$$eval('#messages li.message', (messages) => messages.reverse().flatMap((message) =>
    [...message.querySelectorAll('li[data-event]')].map((line) => `${line.getAttribute('data-event')} ${line.getAttribute('data-task-id')}`)));
}

/** A task written straight into the database, as psql would. */
async function sqlTask(environmentId: number, objectClassId: number, name: string): Promise<number> {
  const { rows } = await db.pool.query<{ id: string }>(
    'INSERT INTO tasks (environment_id, object_class_id, name) VALUES ($1, $2, $3) RETURNING id', [environmentId, objectClassId, name]);
  return Number(rows[0]?.id);
}

async function lastOutboxId(): Promise<number> {
  const { rows } = await db.pool.query<{ id: string | null }>('SELECT max(id) AS id FROM task_events.outbox');
  return Number(rows[0]?.id ?? 0);
}

const laptop = await browser.newContext({ viewport: { width: 1280, height: 900 } });
t.teardown(() => laptop.close());
const acme = await watch(laptop);
const { page } = acme;

t.test('the page loads live, from this server only, with no console errors', async (t) => {
  const response = await page.goto(server.url);
  t.equal(response?.status(), 200);
  t.match(response?.headers()['content-security-policy'], /default-src 'none'/, 'a CSP that allows only this origin');
  await statusSays(page, /^Live$/);
  t.equal(await page.locator('h1').textContent(), 'Task events');
  t.equal(await page.getByLabel('Demo key').inputValue(), 'demo-key-1', 'Acme by default');
  const origin = new URL(server.url);
  const foreign = acme.urls.filter((url) => new URL(url).host !== origin.host);
  t.same(foreign, [], 'nothing loaded from another host');
  t.equal(acme.sockets.length, 1, 'one WebSocket');
  t.match(acme.sockets[0], /^ws:\/\/127\.0\.0\.1:\d+\/ws\/events\/tasks\/\?uuid=[0-9a-f-]{36}$/, 'to this server');
  const unnamed = await page.$$eval('input, select, button', (controls) => controls
    .filter((control) => !(control as HTMLInputElement).labels?.length && !control.getAttribute('aria-label') && !control.textContent?.trim())
    .map((control) => control.outerHTML));
  t.same(unnamed, [], 'every control has a name');
  t.same(acme.errors, [], 'no console errors');
});

t.test('a write from psql appears as events, with the task', async (t) => {
  const id = await sqlTask(1, 2, 'Written with SQL');
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [id]);
  await shown(eventLine(page, 'task_created', id));
  await shown(eventLine(page, 'task_status_changed', id));
  const card = page.locator(`#task-${id}`);
  await card.filter({ hasText: 'Written with SQL' }).waitFor({ timeout: WAIT });
  t.equal(await card.getByRole('combobox', { name: /^Status of/ }).inputValue(), 'done', 'the list shows the new status');
  const message = page.locator('#messages li.message', { has: page.locator(`li[data-event="task_created"][data-task-id="${id}"]`) });
  const frame = acme.frames.find((text) => text.includes(`"task_id":${id},`) && text.includes('"task_created"')) ?? '';
  const events = (JSON.parse(frame) as { events: unknown[] }).events.length;
  t.match(await message.locator('.message-head').textContent(), new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\s*${events} events?\\s*${Buffer.byteLength(frame)} B`),
    'arrival time, number of events, and the size of the frame as sent');
  t.same(acme.errors, []);
});

t.test('the page\'s own changes, through the REST API, appear as events: all eight', async (t) => {
  // by keyboard: type the name, Enter submits the form
  await page.getByLabel('Task name').focus();
  await page.keyboard.type('Created on the page');
  await page.keyboard.press('Enter');
  const created = page.locator('#task-list li.task', { hasText: 'Created on the page' });
  await created.waitFor({ timeout: WAIT });
  const id = Number(await created.getAttribute('data-task-id'));
  const card = page.locator(`#task-${id}`);
  await shown(eventLine(page, 'task_created', id));
  t.equal(await page.getByLabel('Task name').inputValue(), '', 'the form is ready for the next one');

  await page.keyboard.press('Tab');
  const focus = await page.evaluate(() => {
    const style = getComputedStyle(document.activeElement as Element);
    return { id: document.activeElement?.id, outline: style.outlineStyle, width: parseFloat(style.outlineWidth) };
  });
  t.match(focus, { id: 'task-class', outline: 'solid' }, 'Tab moves on, and the focus is drawn');
  t.ok(focus.width >= 2, 'a focus outline of 2 px or more');

  await card.getByRole('combobox', { name: /^Status of/ }).selectOption('in_progress');
  await shown(eventLine(page, 'task_status_changed', id));
  await card.getByRole('button', { name: /^Rename/ }).click();
  await card.getByLabel('New name').fill('Renamed on the page');
  await card.getByRole('button', { name: 'Save' }).click();
  await shown(eventLine(page, 'task_value_changed', id));
  await page.locator(`#task-${id} .task-name`, { hasText: 'Renamed on the page' }).waitFor({ timeout: WAIT });
  await card.getByRole('button', { name: /^Add owner/ }).click();
  await shown(eventLine(page, 'task_owner_added', id));
  await card.getByRole('button', { name: /^Add assignee/ }).click();
  await shown(eventLine(page, 'task_assignee_added', id));
  await card.getByRole('button', { name: /^Remove owner alice/ }).click();
  await shown(eventLine(page, 'task_owner_removed', id));
  await card.getByRole('button', { name: /^Remove assignee alice/ }).click();
  await shown(eventLine(page, 'task_assignee_removed', id));
  await card.getByRole('button', { name: /^Delete/ }).click();
  await shown(eventLine(page, 'task_deleted', id));
  await page.locator(`#task-${id}`).waitFor({ state: 'detached', timeout: WAIT });
  const { rows } = await db.pool.query('SELECT event FROM task_events.outbox WHERE task_id = $1 ORDER BY id', [id]);
  t.same(rows.map((row) => row.event), [
    'task_created', 'task_status_changed', 'task_value_changed', 'task_owner_added', 'task_assignee_added',
    'task_owner_removed', 'task_assignee_removed', 'task_deleted',
  ], 'the database recorded what the page did');
  t.same((await pageLines(page)).filter((line) => line.endsWith(` ${id}`)), rows.map((row) => `${row.event} ${id}`), 'the page showed each, in order');
  t.same(acme.errors, []);
});

t.test('another tenant\'s events never appear', async (t) => {
  const response = await fetch(`${server.url}/api/tasks/`, {
    method: 'POST', headers: { authorization: 'Token demo-key-2', 'content-type': 'application/json' },
    body: JSON.stringify({ object_class_id: 4, name: 'Globex through the API' }),
  });
  const globex = [((await response.json()) as { id: number }).id, await sqlTask(2, 4, 'Globex through SQL')];
  const marker = await sqlTask(1, 1, 'Acme, written after Globex');
  await shown(eventLine(page, 'task_created', marker));
  const lines = await pageLines(page);
  t.same(lines.filter((line) => globex.some((id) => line.endsWith(` ${id}`))), [], 'no line of a Globex task');
  t.equal(await page.locator(globex.map((id) => `#task-${id}`).join(', ')).count(), 0, 'no Globex task listed');

  // Signed in as Globex, the other way round.
  await page.getByLabel('Demo key').selectOption('demo-key-2');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await statusSays(page, /^Live$/);
  const acmeTask = await sqlTask(1, 1, 'Acme, unseen by Globex');
  const globexTask = await sqlTask(2, 4, 'Globex, seen by Globex');
  await shown(eventLine(page, 'task_created', globexTask));
  await page.locator(`#task-${globexTask}`).waitFor({ timeout: WAIT });
  t.equal(await eventLine(page, 'task_created', acmeTask).count(), 0, 'the Acme task\'s event is not shown to Globex');
  t.equal(await page.locator('#task-list li.task').count(), 3, 'Globex\'s three tasks');

  await page.getByLabel('Demo key').selectOption('demo-key-1');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await statusSays(page, /^Live$/);
  t.same(acme.errors, []);
});

t.test('filters reconnect the client with objectClassIds and eventTypes', async (t) => {
  await page.locator('#filters-box summary').click();
  await page.getByLabel('Bug', { exact: true }).uncheck();
  await page.getByLabel('Chore', { exact: true }).uncheck();
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await statusSays(page, /^Live/);
  t.match(acme.sockets.at(-1), /[?&]object_class_ids=2(&|$)/, 'the client asked for Feature only');
  t.equal(await page.locator('#filter-summary').textContent(), 'Feature');
  const bug = await sqlTask(1, 1, 'a Bug, filtered out');
  const feature = await sqlTask(1, 2, 'a Feature, shown');
  await shown(eventLine(page, 'task_created', feature));
  t.equal(await eventLine(page, 'task_created', bug).count(), 0, 'the Bug task\'s event is not shown');

  await page.getByRole('button', { name: 'Show all' }).click();
  await statusSays(page, /^Live/);
  await page.getByLabel('task_created', { exact: true }).uncheck();
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await statusSays(page, /^Live/);
  const types = new URL(acme.sockets.at(-1) ?? '').searchParams.get('event_types')?.split(',');
  t.same(types, ['task_value_changed', 'task_status_changed', 'task_owner_added', 'task_owner_removed',
    'task_assignee_added', 'task_assignee_removed', 'task_deleted'], 'the client asked for every type but task_created');
  t.notOk(new URL(acme.sockets.at(-1) ?? '').searchParams.has('object_class_ids'), 'and every class');
  const task = await sqlTask(1, 3, 'created unseen, then changed');
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [task]);
  await shown(eventLine(page, 'task_status_changed', task));
  t.equal(await eventLine(page, 'task_created', task).count(), 0, 'its task_created is not shown');

  await page.getByRole('button', { name: 'Show all' }).click();
  await statusSays(page, /^Live/);
  t.equal(await page.locator('#filter-summary').textContent(), 'all events');
  await page.locator('#filters-box summary').click();
  t.same(acme.errors, []);
});

t.test('a server restart (SIGTERM, then started again): the events written meanwhile are shown, no gap', async (t) => {
  const live = await sqlTask(1, 2, 'before the restart');
  await shown(eventLine(page, 'task_created', live));
  const before = await lastOutboxId();

  acme.outage = true;
  t.equal(await server.stop(), 0, 'the server exits 0 on SIGTERM');
  await statusSays(page, /^Reconnecting/);
  const down = await sqlTask(1, 1, 'written while the server was down');
  await db.pool.query(`UPDATE tasks SET status = 'done' WHERE id = $1`, [down]);
  await db.pool.query('INSERT INTO task_owners (task_id, user_id) VALUES ($1, 1)', [down]);
  const started = performance.now();
  // torn down with the file, not with this test: the tests after it use it
  server = await ExampleServer.start(root, { databaseUrl: db.url, port: server.port, env: ENV });
  t.comment(`the example restarted in ${Math.round(performance.now() - started)} ms`);
  await statusSays(page, /^Live · resumed: 3 events caught up$/, RECONNECT_WAIT);
  acme.outage = false;
  const caughtUp = page.locator('#messages li.message.caught-up');
  for (const event of ['task_created', 'task_status_changed', 'task_owner_added']) {
    t.equal(await caughtUp.locator(`li[data-event="${event}"][data-task-id="${down}"]`).count(), 1, `${event} shown once, as caught up`);
  }
  const after = await sqlTask(1, 3, 'after the restart');
  await shown(eventLine(page, 'task_created', after));
  t.equal(await caughtUp.locator(`li[data-task-id="${after}"]`).count(), 0, 'a live event is not counted as caught up');

  const { rows } = await db.pool.query<{ line: string }>(
    `SELECT event || ' ' || task_id AS line FROM task_events.outbox WHERE environment_id = 1 AND id > $1 ORDER BY id`, [before]);
  const lines = await pageLines(page);
  t.same(lines.slice(-rows.length), rows.map((row) => row.line), 'every event since the restart began, in order');
  t.same(rows.filter((row) => lines.indexOf(row.line) !== lines.lastIndexOf(row.line)), [], 'none twice');
  await page.screenshot({ path: `${SCREENSHOTS}laptop.png` });
  t.same(acme.errors, [], 'no console errors but the refused connections while the server was down');
});

t.test('a reload resumes from the cursor kept in sessionStorage', async (t) => {
  await page.goto('about:blank');
  const away = await sqlTask(1, 2, 'written while the page was away');
  await db.pool.query(`UPDATE tasks SET name = 'renamed while the page was away' WHERE id = $1`, [away]);
  await page.goto(server.url);
  await statusSays(page, /^Live · resumed: 2 events caught up$/);
  await shown(page.locator(`#messages li.message.caught-up li[data-event="task_created"][data-task-id="${away}"]`));
  await shown(page.locator(`#messages li.message.caught-up li[data-event="task_value_changed"][data-task-id="${away}"]`));
  await page.locator(`#task-${away}`, { hasText: 'renamed while the page was away' }).waitFor({ timeout: WAIT });
  t.same(acme.errors, []);
});

t.test('a phone-sized screen: no horizontal scroll, the create form usable', async (t) => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  t.teardown(() => phone.close());
  const watched = await watch(phone);
  const { page } = watched;
  await page.goto(server.url);
  await statusSays(page, /^Live$/);
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  t.equal(await overflow(), 0, 'nothing wider than the screen');
  const below = await page.evaluate(() => document.documentElement.scrollHeight - document.body.getBoundingClientRect().height);
  t.ok(below <= 1, 'and no scrolling past the end (a hidden label escaping the task list\'s scroll box did that)');

  const name = `A task with a long name: ${'unbroken'.repeat(12)}`;
  await page.getByLabel('Task name').fill(name);
  const button = page.getByRole('button', { name: 'Create task' });
  const box = await button.boundingBox();
  t.ok(box && box.x >= 0 && box.x + box.width <= 390 && box.height >= 40, 'the button is on screen and big enough to tap');
  await button.tap();
  const card = page.locator('#task-list li.task', { hasText: 'A task with a long name' });
  await card.waitFor({ timeout: WAIT });
  const id = Number(await card.getAttribute('data-task-id'));
  await shown(eventLine(page, 'task_created', id));
  t.equal(await overflow(), 0, 'a long name wraps');
  await page.screenshot({ path: `${SCREENSHOTS}phone.png` });
  await page.locator('#events-heading').evaluate((heading) => heading.scrollIntoView());
  await page.screenshot({ path: `${SCREENSHOTS}phone-events.png` });
  t.same(watched.errors, []);
});
