// The example's live page: sign in with a demo key, see the environment's tasks and change them
// through the REST API, and watch the events of every write (this page's, another's, psql's)
// arrive through `fastify-task-events/client`, message by message. Bundled by example/page.ts.
import { TASK_EVENT_NAMES, type TaskEventName } from 'fastify-task-events/client';
import { LiveChart } from './chart.js';
import { byId, h, plural } from './dom.js';
import { MessageList } from './messages.js';
import { ApiError, Rest, type Named } from './rest.js';
import { loadSaved, Stream, type StreamSettings } from './stream.js';
import { TaskList } from './tasks.js';


const DEFAULT_KEY = 'demo-key-1';

const keySelect = byId<HTMLSelectElement>('api-key');
const status = byId('status');
const statusText = byId('status-text');
const createForm = byId<HTMLFormElement>('create-task');
const classSelect = byId<HTMLSelectElement>('task-class');
const filterForm = byId<HTMLFormElement>('filters');
const filterError = byId('filters-error');
const messages = new MessageList(byId<HTMLOListElement>('messages'), byId('messages-empty'));
const chart = new LiveChart(
  { chart: byId<SVGSVGElement>('rate-chart'), summary: byId('rate-summary') },
  { chart: byId<SVGSVGElement>('size-chart'), summary: byId('size-summary') },
);

/** Counts sign-ins: one that a later sign-in overtook stops where it is. */
let signIns = 0;

/** What the page is signed in to; replaced whole on each sign-in. */
let session: { rest: Rest; tasks: TaskList; classes: Named[]; stream: Stream | null } | null = null;

function showStatus(state: string, text: string): void {
  status.dataset.state = state;
  statusText.textContent = text;
}

function tenantName(key: string): string {
  return [...keySelect.options].find((option) => option.value === key)?.text.split(' · ')[0] ?? key;
}

/** Signs in with `key`: the environment's classes, users and tasks, then its stream (from `cursor`, if any). */
async function signIn(key: string, filters: Omit<StreamSettings, 'key'>, cursor: string | null): Promise<void> {
  const signInNumber = ++signIns;
  session?.stream?.close();
  session?.tasks.close();
  session = null;
  messages.clear();
  chart.clear();
  keySelect.value = key;
  showStatus('connecting', 'Signing in…');
  const rest = new Rest(key);
  let classes: Named[];
  let users: Named[];
  try {
    [classes, users] = await Promise.all([rest.objectClasses(), rest.users()]);
  } catch (error) {
    if (signInNumber !== signIns) return;
    const text = error instanceof ApiError && error.status === 401 ? `The key ${key} was refused` : `Signing in failed: ${(error as Error).message}`;
    return showStatus('closed', text);
  }
  if (signInNumber !== signIns) return;
  const classNames = new Map(classes.map((objectClass) => [objectClass.id, objectClass.name]));
  messages.classNames = classNames;
  classSelect.replaceChildren(...classes.map((objectClass) => h('option', { value: objectClass.id }, objectClass.name)));
  const tasks = new TaskList(rest, classNames, users);
  session = { rest, tasks, classes, stream: null };
  showFilters(classes, filters);
  messages.note(`Signed in to ${tenantName(key)}${cursor ? ', resuming the stream' : ''}`);
  startStream({ key, ...filters }, cursor);
  await tasks.load();
}

function startStream(settings: StreamSettings, cursor: string | null, quiet = false): void {
  if (!session) return;
  const { tasks } = session;
  session.stream?.close();
  session.stream = new Stream(settings, cursor, session.rest, {
    message: (message) => {
      messages.add(message);
      chart.record({ receivedAt: message.receivedAt, events: message.events.length, bytes: message.bytes, caughtUp: message.caughtUp > 0 });
      void tasks.apply(message.events);
    },
    status: showStatus,
    gap: () => {
      messages.note('The saved position had expired: events written meanwhile may be missing. The stream restarted from now.');
      void tasks.reload();
    },
  }, quiet);
  byId('filter-summary').textContent = describeFilters(settings);
}

/** The filter's checkboxes: every class and type checked means no filter. */
function showFilters(classes: Named[], { objectClassIds, eventTypes }: Omit<StreamSettings, 'key'>): void {
  const choice = (name: string, value: string | number, text: string, checked: boolean) => {
    const id = `filter-${name}-${value}`;
    return h('div', { class: 'choice' },
      h('input', { type: 'checkbox', id, name, value, checked }),
      h('label', { for: id }, text));
  };
  byId('class-filters').replaceChildren(...classes.map((objectClass) =>
    choice('class', objectClass.id, objectClass.name, objectClassIds.length === 0 || objectClassIds.includes(objectClass.id))));
  byId('type-filters').replaceChildren(...TASK_EVENT_NAMES.map((type) =>
    choice('type', type, type, eventTypes.length === 0 || eventTypes.includes(type))));
}

/** The filter the checkboxes say; null (and a message) when a group has nothing checked. */
function readFilters(): Omit<StreamSettings, 'key'> | null {
  const checked = (name: string) => [...filterForm.querySelectorAll<HTMLInputElement>(`input[name="${name}"]`)];
  const classes = checked('class');
  const types = checked('type');
  const pickedClasses = classes.filter((box) => box.checked).map((box) => Number(box.value));
  const pickedTypes = types.filter((box) => box.checked).map((box) => box.value as TaskEventName);
  if (pickedClasses.length === 0 || pickedTypes.length === 0) {
    filterError.textContent = `Check at least one ${pickedClasses.length === 0 ? 'object class' : 'event type'}.`;
    filterError.hidden = false;
    return null;
  }
  filterError.hidden = true;
  // all checked: no filter at all (a class added later is then included too)
  return {
    objectClassIds: pickedClasses.length === classes.length ? [] : pickedClasses,
    eventTypes: pickedTypes.length === types.length ? [] : pickedTypes,
  };
}

function describeFilters({ objectClassIds, eventTypes }: Omit<StreamSettings, 'key'>): string {
  if (objectClassIds.length === 0 && eventTypes.length === 0) return 'all events';
  const names = new Map(session?.classes.map((objectClass) => [objectClass.id, objectClass.name]));
  const parts = [];
  if (objectClassIds.length) parts.push(objectClassIds.map((id) => names.get(id) ?? `class ${id}`).join(', '));
  if (eventTypes.length) parts.push(eventTypes.length <= 2 ? eventTypes.join(', ') : plural(eventTypes.length, 'event type'));
  return parts.join(' · ');
}

byId<HTMLFormElement>('sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  void signIn(keySelect.value, { objectClassIds: [], eventTypes: [] }, null);
});

createForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const input = byId<HTMLInputElement>('task-name');
  const name = input.value.trim();
  if (!session || !name) return;
  void session.tasks.create(Number(classSelect.value), name).then((created) => {
    if (created) input.value = '';
  });
});

filterForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const filters = readFilters();
  if (!session?.stream || !filters) return;
  const { key } = session.stream.settings;
  // The same stream's cursor: the filtered stream goes on from where this one is, without a gap.
  startStream({ key, ...filters }, session.stream.cursor, true);
  messages.note(`Filter: ${describeFilters(filters)}`);
});

byId('clear-filters').addEventListener('click', () => {
  for (const box of filterForm.querySelectorAll<HTMLInputElement>('input[type="checkbox"]')) box.checked = true;
  filterForm.requestSubmit();
});

// A reload (or a restored tab) goes on with the stream this tab had, from its saved cursor.
const saved = loadSaved();
void signIn(saved?.key ?? DEFAULT_KEY, { objectClassIds: saved?.objectClassIds ?? [], eventTypes: saved?.eventTypes ?? [] }, saved?.cursor ?? null);
