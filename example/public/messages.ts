// The list of messages received, newest first: each with its arrival time, its number of events
// and its size, then one line per event with the event's name as the protocol spells it and the
// task it is about. Notes (sign-in, a new filter, a gap) go in between, so the list tells the story.
import type { TaskEvent } from 'fastify-task-events/client';
import { clockTime, formatBytes, h, plural } from './dom.js';
import type { Message } from './stream.js';

/** Older messages are dropped from the page past this many (the stream is endless). */
const MAX_MESSAGES = 200;
/** Lines shown of one message (a bulk UPDATE sends messages of 1,000 events); the rest is counted. */
const MAX_LINES = 100;

/** The messages list and its empty-state text. */
export class MessageList {
  readonly #list: HTMLOListElement;
  readonly #empty: HTMLElement;
  /** Object class names by id, for the lines. */
  classNames = new Map<number, string>();

  constructor(list: HTMLOListElement, empty: HTMLElement) {
    this.#list = list;
    this.#empty = empty;
  }

  add({ events, receivedAt, bytes, caughtUp }: Message): void {
    const shown = events.slice(0, MAX_LINES);
    const item = h('li', { class: caughtUp ? 'message caught-up' : 'message', 'data-events': events.length },
      h('p', { class: 'message-head' },
        h('time', { datetime: receivedAt.toISOString() }, clockTime(receivedAt)),
        h('span', { class: 'message-count' }, plural(events.length, 'event')),
        h('span', { class: 'message-bytes' }, formatBytes(bytes)),
        caughtUp > 0 && h('span', { class: 'tag' }, 'caught up')),
      h('ul', { class: 'lines' }, ...shown.map((event) => this.#line(event)),
        events.length > shown.length && h('li', { class: 'more' }, `and ${plural(events.length - shown.length, 'more event')}`)));
    this.#prepend(item);
  }

  /** A line of its own between messages: what changed in the stream. */
  note(text: string): void {
    this.#prepend(h('li', { class: 'note' }, h('time', { datetime: new Date().toISOString() }, clockTime(new Date())), ' ', text));
  }

  clear(): void {
    this.#list.replaceChildren();
    this.#empty.hidden = false;
  }

  #line(event: TaskEvent): HTMLLIElement {
    const className = this.classNames.get(event.object_class_id);
    return h('li', { 'data-event': event.event, 'data-task-id': event.task_id, title: event.timestamp },
      h('code', { class: `event ${event.event}` }, event.event),
      ' ',
      h('span', { class: 'task-ref' }, `task ${event.task_id}`),
      className && h('span', { class: 'class-name' }, className));
  }

  #prepend(item: HTMLLIElement): void {
    this.#list.prepend(item);
    while (this.#list.children.length > MAX_MESSAGES) this.#list.lastElementChild?.remove();
    this.#empty.hidden = this.#list.querySelector('.message') !== null;
  }
}
