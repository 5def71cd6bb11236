// The few DOM helpers the page needs: elements built from data with textContent (a task's name
// from psql is text, never markup), lookups that fail loudly, and times shown to the millisecond.

type Child = Node | string | number | null | undefined | false;
type Attribute = string | number | boolean | null | undefined;
type Listener = (event: Event) => void;

/**
 * `h('button', { type: 'button', onclick: remove }, 'Remove')`: an element with its attributes
 * (true: present, false/null/undefined: left out), `on…` listeners and children (strings as text).
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attributes: Record<string, Attribute | Listener> = {}, ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, '');
    else if (value !== false && value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  element.append(...children.filter((child): child is Node | string | number => child !== null && child !== undefined && child !== false)
    .map((child) => (typeof child === 'number' ? String(child) : child)));
  return element;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element (bars of a chart) with its attributes and an optional tooltip. */
export function svg(tag: 'rect' | 'line', attributes: Record<string, string | number>, title?: string): SVGElement {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (title) element.append(Object.assign(document.createElementNS(SVG, 'title'), { textContent: title }));
  return element;
}

/** The element with this id; throws when the page lacks it (a typo, not a state to handle). */
export function byId<T extends Element = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as unknown as T;
}

const two = (value: number) => String(value).padStart(2, '0');

/** `14:03:05.123`, local time. */
export function clockTime(date: Date): string {
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${String(date.getMilliseconds()).padStart(3, '0')}`;
}

/** `812 B`, `1.2 kB`, `3.4 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1_000_000) return `${(bytes / 1000).toFixed(1)} kB`;
  return `${(bytes / 1_000_000).toFixed(1)} MB`;
}

/** `1 event`, `3 events`. */
export function plural(count: number, noun: string): string {
  return `${count.toLocaleString('en')} ${noun}${count === 1 ? '' : 's'}`;
}
