// One task on the page, with its controls: status, rename, owners and assignees, delete. A card
// is updated in place when its task changes (an event, or the answer to the page's own request),
// so a control that has the keyboard focus keeps it while the events stream in.
import { h } from './dom.js';
import type { Named, Role, Task } from './rest.js';

/** The statuses offered; a task may have another (written with psql), which is offered too. */
const STATUSES: ReadonlyArray<[value: string, label: string]> = [['open', 'Open'], ['in_progress', 'In progress'], ['done', 'Done']];

const ROLE_NAMES: Record<Role, { plural: string; singular: string }> = {
  owners: { plural: 'Owners', singular: 'owner' },
  assignees: { plural: 'Assignees', singular: 'assignee' },
};

/** What the card's controls ask for; the list carries it out through the API. */
export interface CardActions {
  update: (task: Task, change: { status?: string; name?: string }) => Promise<boolean>;
  remove: (task: Task) => Promise<void>;
  setMember: (task: Task, role: Role, userId: number, member: boolean) => Promise<void>;
}

/** What every card of one environment shares. */
export interface CardContext {
  classNames: Map<number, string>;
  users: Named[];
  actions: CardActions;
}

interface RoleParts {
  chips: HTMLUListElement;
  none: HTMLElement;
  picker: HTMLElement;
  label: HTMLLabelElement;
  select: HTMLSelectElement;
  add: HTMLButtonElement;
}

export class TaskCard {
  readonly element: HTMLLIElement;
  #task: Task;
  readonly #context: CardContext;
  readonly #name: HTMLHeadingElement;
  readonly #meta: HTMLElement;
  readonly #status: HTMLSelectElement;
  readonly #renameButton: HTMLButtonElement;
  readonly #deleteButton: HTMLButtonElement;
  readonly #renameForm: HTMLFormElement;
  readonly #renameInput: HTMLInputElement;
  readonly #roles: Record<Role, RoleParts>;

  constructor(task: Task, context: CardContext) {
    this.#task = task;
    this.#context = context;
    const id = `task-${task.id}`;
    this.#name = h('h3', { class: 'task-name', id: `${id}-name` });
    this.#meta = h('span', { class: 'task-meta' });
    this.#status = h('select', { id: `${id}-status`, onchange: () => void this.#setStatus() });
    this.#renameButton = h('button', { type: 'button', onclick: () => this.#openRename() }, 'Rename');
    this.#deleteButton = h('button', { type: 'button', class: 'danger', onclick: () => void context.actions.remove(this.#task) }, 'Delete');
    this.#renameInput = h('input', { id: `${id}-new-name`, name: 'name', required: true, maxlength: 500, autocomplete: 'off' });
    this.#renameForm = h('form', { class: 'rename', hidden: true, onsubmit: (event) => void this.#rename(event) },
      h('label', { for: `${id}-new-name` }, 'New name'),
      this.#renameInput,
      h('button', { type: 'submit', class: 'primary' }, 'Save'),
      h('button', { type: 'button', onclick: () => this.#closeRename() }, 'Cancel'));
    this.#renameForm.addEventListener('keydown', (event) => event.key === 'Escape' && this.#closeRename());
    this.#roles = { owners: this.#roleParts('owners'), assignees: this.#roleParts('assignees') };
    this.element = h('li', { class: 'task', id, 'data-task-id': task.id, 'aria-labelledby': `${id}-name` },
      h('div', { class: 'task-head' }, this.#name, this.#meta,
        h('span', { class: 'task-buttons' }, this.#renameButton, this.#deleteButton)),
      this.#renameForm,
      h('div', { class: 'task-body' },
        h('span', { class: 'role' }, h('label', { for: `${id}-status`, class: 'role-name' }, 'Status'), this.#status),
        ...(['owners', 'assignees'] as const).map((role) => h('span', { class: 'role' },
          h('span', { class: 'role-name', id: `${id}-${role}` }, ROLE_NAMES[role].plural),
          this.#roles[role].chips, this.#roles[role].none, this.#roles[role].picker))));
    this.update(task);
  }

  get task(): Task {
    return this.#task;
  }

  /** Shows `task` (the same task, newer); focus stays where it was, or moves next door when its control goes. */
  update(task: Task): void {
    this.#task = task;
    const label = `task “${task.name}”`;
    this.#name.textContent = task.name;
    this.#meta.textContent = `#${task.id} · ${this.#context.classNames.get(task.object_class_id) ?? `class ${task.object_class_id}`}`;
    const statuses = STATUSES.some(([value]) => value === task.status) ? STATUSES : [...STATUSES, [task.status, task.status] as const];
    this.#status.replaceChildren(...statuses.map(([value, text]) => h('option', { value, selected: value === task.status }, text)));
    this.#status.value = task.status;
    this.#status.setAttribute('aria-label', `Status of ${label}`);
    this.#renameButton.setAttribute('aria-label', `Rename ${label}`);
    this.#deleteButton.setAttribute('aria-label', `Delete ${label}`);
    for (const role of ['owners', 'assignees'] as const) this.#showRole(role, task[role], label);
  }

  #roleParts(role: Role): RoleParts {
    const selectId = `task-${this.#task.id}-${role}-pick`;
    const select = h('select', { id: selectId });
    const label = h('label', { for: selectId, class: 'visually-hidden' });
    const add = h('button', { type: 'button', onclick: () => void this.#context.actions.setMember(this.#task, role, Number(select.value), true) }, 'Add');
    return {
      chips: h('ul', { class: 'chips', 'aria-labelledby': `task-${this.#task.id}-${role}` }),
      none: h('span', { class: 'none' }, 'none'),
      picker: h('span', { class: 'picker' }, label, select, add),
      label,
      select,
      add,
    };
  }

  #showRole(role: Role, members: number[], label: string): void {
    const parts = this.#roles[role];
    const { singular } = ROLE_NAMES[role];
    const userName = (id: number) => this.#context.users.find((user) => user.id === id)?.name ?? `user ${id}`;
    const hadFocus = parts.chips.contains(document.activeElement);
    parts.chips.replaceChildren(...members.map((userId) => h('li', { class: 'chip' }, userName(userId),
      h('button', {
        type: 'button', class: 'chip-remove', 'aria-label': `Remove ${singular} ${userName(userId)} from ${label}`,
        onclick: () => void this.#context.actions.setMember(this.#task, role, userId, false),
      }, '×'))));
    parts.none.hidden = members.length > 0;
    const candidates = this.#context.users.filter((user) => !members.includes(user.id));
    const picked = parts.select.value;
    parts.select.replaceChildren(...candidates.map((user) => h('option', { value: user.id }, user.name)));
    if (candidates.some((user) => String(user.id) === picked)) parts.select.value = picked;
    parts.label.textContent = `New ${singular} of ${label}`;
    parts.add.setAttribute('aria-label', `Add ${singular} to ${label}`);
    const pickerHadFocus = parts.picker.contains(document.activeElement);
    parts.picker.hidden = candidates.length === 0;
    // The control that had the focus is gone: the nearest one of the same list takes it.
    if (hadFocus && !parts.chips.contains(document.activeElement)) (parts.picker.hidden ? this.#status : parts.add).focus();
    if (pickerHadFocus && parts.picker.hidden) (parts.chips.querySelector('button') ?? this.#status).focus();
  }

  async #setStatus(): Promise<void> {
    const status = this.#status.value;
    if (status !== this.#task.status) await this.#context.actions.update(this.#task, { status });
  }

  #openRename(): void {
    this.#renameInput.value = this.#task.name;
    this.#renameForm.hidden = false;
    this.#renameInput.focus();
    this.#renameInput.select();
  }

  #closeRename(): void {
    this.#renameForm.hidden = true;
    this.#renameButton.focus();
  }

  async #rename(event: Event): Promise<void> {
    event.preventDefault();
    const name = this.#renameInput.value.trim();
    if (!name || name === this.#task.name) return this.#closeRename();
    if (await this.#context.actions.update(this.#task, { name })) this.#closeRename();
  }
}
