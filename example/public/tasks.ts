// The environment's tasks, newest first, kept current by the stream: the tasks a message is about
// are fetched again (or dropped, once deleted), whoever changed them: this page, another one, psql.
import type { TaskEvent } from 'fastify-task-events/client';
import { byId } from './dom.js';
import { ApiError, type Named, type Rest, type Role, type Task } from './rest.js';
import { TaskCard, type CardContext } from './task-card.js';

/** Tasks fetched per page (the API's default). */
const PAGE = 100;
/** A message about more tasks than this reloads the tasks shown instead of fetching each. */
const REFRESH_ONE_BY_ONE = 20;
/** The most tasks reloaded at once (the API's maximum). */
const RELOAD_LIMIT = 1000;

/** The task list of one environment. */
export class TaskList {
  readonly #rest: Rest;
  readonly #context: CardContext;
  readonly #cards = new Map<number, TaskCard>();
  /** A request per task id: an answer older than the latest asked is dropped. */
  readonly #asked = new Map<number, number>();
  #loaded = 0;
  #more = false;
  /** After a new sign-in: answers still on their way are dropped. */
  #closed = false;
  readonly #list = byId<HTMLUListElement>('task-list');
  readonly #empty = byId('tasks-empty');
  readonly #count = byId('task-count');
  readonly #moreButton = byId<HTMLButtonElement>('more-tasks');
  readonly #error = byId('tasks-error');

  constructor(rest: Rest, classNames: Map<number, string>, users: Named[]) {
    this.#rest = rest;
    this.#context = {
      classNames,
      users,
      actions: {
        update: (task, change) => this.#run(`Changing ${task.name}`, async () => this.#upsert(await rest.updateTask(task.id, change))),
        remove: async (task) => {
          const card = this.#cards.get(task.id);
          const hadFocus = card?.element.contains(document.activeElement);
          if (await this.#run(`Deleting ${task.name}`, () => rest.deleteTask(task.id))) this.#drop(task.id);
          if (hadFocus) byId('tasks-heading').focus();
        },
        setMember: async (task, role: Role, userId, member) => {
          await this.#run(`Changing the ${role} of ${task.name}`, () => rest.setMember(task.id, role, userId, member));
          await this.refresh([task.id]);
        },
      },
    };
    this.#list.replaceChildren();
    this.#moreButton.onclick = () => void this.#loadPage();
  }

  /** Stops showing anything: the list belongs to the next sign-in's TaskList. */
  close(): void {
    this.#closed = true;
  }

  /** The first page of tasks. */
  async load(): Promise<void> {
    await this.#loadPage();
  }

  async create(objectClassId: number, name: string): Promise<boolean> {
    return this.#run('Creating the task', async () => this.#upsert(await this.#rest.createTask(objectClassId, name)));
  }

  /** What a message means for the list: deleted tasks go, the others are fetched again. */
  async apply(events: TaskEvent[]): Promise<void> {
    const ids = new Set<number>();
    for (const event of events) {
      if (event.event === 'task_deleted') {
        this.#drop(event.task_id);
        ids.delete(event.task_id);
      } else {
        ids.add(event.task_id);
      }
    }
    await this.refresh(ids);
  }

  /** Fetches these tasks again; many at once: the tasks shown are reloaded instead. */
  async refresh(ids: Iterable<number>): Promise<void> {
    const wanted = [...ids];
    if (wanted.length > REFRESH_ONE_BY_ONE) return this.reload();
    await Promise.all(wanted.map(async (id) => {
      const asked = (this.#asked.get(id) ?? 0) + 1;
      this.#asked.set(id, asked);
      const task = await this.#rest.task(id).catch((error: unknown) => {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }).catch((error: Error) => {
        this.#showError(`Fetching task ${id} failed: ${error.message}`);
        return undefined;
      });
      if (this.#asked.get(id) !== asked || task === undefined) return;
      if (task) this.#upsert(task);
      else this.#drop(id);
    }));
  }

  async #loadPage(): Promise<void> {
    await this.#run('Loading the tasks', async () => {
      const tasks = await this.#rest.tasks(PAGE, this.#loaded);
      this.#loaded += tasks.length;
      this.#more = tasks.length === PAGE;
      for (const task of tasks) this.#upsert(task);
    });
  }

  /** The pages loaded so far, at once (after a bulk change or a gap), keeping what events added. */
  async reload(): Promise<void> {
    await this.#run('Reloading the tasks', async () => {
      const limit = Math.min(RELOAD_LIMIT, Math.max(PAGE, this.#loaded));
      const tasks = await this.#rest.tasks(limit, 0);
      const seen = new Set(tasks.map((task) => task.id));
      const last = tasks.at(-1)?.id ?? 0;
      // in the range reloaded and not found: deleted meanwhile
      for (const id of this.#cards.keys()) if (id <= last && !seen.has(id)) this.#drop(id);
      this.#loaded = tasks.length;
      this.#more = tasks.length === limit;
      for (const task of tasks) this.#upsert(task);
    });
  }

  #upsert(task: Task): void {
    if (this.#closed) return;
    this.#asked.set(task.id, (this.#asked.get(task.id) ?? 0) + 1);
    const card = this.#cards.get(task.id);
    if (card) return card.update(task);
    const created = new TaskCard(task, this.#context);
    this.#cards.set(task.id, created);
    // newest first: before the first card with a smaller id
    const next = [...this.#list.children].find((element) => Number((element as HTMLElement).dataset.taskId) < task.id);
    this.#list.insertBefore(created.element, next ?? null);
    this.#showCount();
  }

  #drop(id: number): void {
    if (this.#closed) return;
    this.#asked.delete(id); // an answer still on its way is dropped too
    this.#cards.get(id)?.element.remove();
    this.#cards.delete(id);
    this.#showCount();
  }

  #showCount(): void {
    if (this.#closed) return;
    const shown = this.#cards.size;
    this.#count.textContent = this.#more ? `(${shown} shown)` : `(${shown})`;
    this.#empty.hidden = shown > 0;
    this.#moreButton.hidden = !this.#more;
  }

  /** Runs one request of the page; a failure is shown (role=alert) and answers false. */
  async #run(what: string, action: () => Promise<void>): Promise<boolean> {
    try {
      await action();
      this.#error.hidden = true;
      return true;
    } catch (error) {
      this.#showError(`${what} failed: ${(error as Error).message}`);
      return false;
    } finally {
      this.#showCount();
    }
  }

  #showError(text: string): void {
    if (this.#closed) return;
    this.#error.textContent = text;
    this.#error.hidden = false;
  }
}
