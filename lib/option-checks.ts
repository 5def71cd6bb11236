// The kinds of value an option takes: what each allows (the end of "must be …"), how a value is
// checked and resolved, and how a text (an environment variable) spells one. Nothing here knows
// a particular option; lib/options.ts assigns a kind to each.
import type pg from 'pg';

/** Node's timers fire at once past this many milliseconds, so no duration may exceed it. */
const MAX_INTEGER = 2_147_483_647;

/** Why a value is refused: what is allowed instead, and the value (or a field's, for an object). */
export class Refusal {
  /** The refused field of an object value (`max` of `rateLimit`). */
  readonly field: string | undefined;
  /** The value is not repeated in messages: it may hold a password. */
  readonly secret: boolean;

  constructor(readonly allows: string, readonly value: unknown, { field, secret = false }: { field?: string; secret?: boolean } = {}) {
    this.field = field;
    this.secret = secret;
  }
}

/** How a text spells a value: `"250"` → 250. Text that spells none is returned as is, for the check to refuse. */
export interface TextSpelling {
  readonly parse: (text: string) => unknown;
  /** What the text may be, where it differs from what the value may be. */
  readonly allows?: string;
}

/** One kind of value: `In` is the type users give, `Out` the resolved one. */
export interface Check<In, Out> {
  readonly allows: string;
  /** The resolved value (origins lower-cased, fields defaulted), or why `value` is refused. */
  readonly resolve: (value: unknown) => Out | Refusal;
  readonly text?: TextSpelling;
  /** Never set: it ties a check to its option's type, so the compiler refuses a boolean check on a number option. */
  readonly input?: In;
}

/** A check of values that stay as given. */
function plain<T>(allows: string, accepts: (value: unknown) => boolean, extra: Pick<Check<T, T>, 'text'> = {}): Check<T, T> {
  return Object.freeze({ allows, resolve: (value: unknown) => (accepts(value) ? (value as T) : new Refusal(allows, value)), ...extra });
}

const integerText: TextSpelling = Object.freeze({ parse: (text: string) => (/^[0-9]+$/.test(text) ? Number(text) : text) });

const isInteger = (value: unknown, min: number): boolean =>
  typeof value === 'number' && Number.isInteger(value) && value >= min && value <= MAX_INTEGER;

export const positiveInteger = plain<number>(`a positive integer up to ${MAX_INTEGER}`, (value) => isInteger(value, 1), { text: integerText });

/** A cap on connections: `0` is none. */
export const connectionCap = plain<number>(`an integer from 0 (no cap) to ${MAX_INTEGER}`, (value) => isInteger(value, 0), { text: integerText });

export const flag = plain<boolean>('true or false', (value) => typeof value === 'boolean', {
  text: {
    parse: (text) => (text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : text),
    allows: 'true, false, 1 or 0',
  },
});

export const nonEmptyString = plain<string>('a non-empty string', (value) => typeof value === 'string' && value !== '');

export const urlPath = plain<string>('a URL path starting with "/"', (value) => typeof value === 'string' && /^\/[\w\-./]*$/.test(value));

export const callback = <F>(): Check<F, F> => plain<F>('a function', (value) => typeof value === 'function');

const POOL = 'a pg.Pool';

export const pgPool: Check<pg.Pool, pg.Pool> = Object.freeze({
  allows: POOL,
  resolve: (value: unknown) => (typeof value === 'object' && value !== null && typeof (value as pg.Pool).query === 'function'
    ? (value as pg.Pool)
    : new Refusal(POOL, value, { secret: true })),
});

const ORIGIN_SHAPE = 'like "https://app.example.com" (scheme://host[:port], no path)';
const ORIGINS = `an array of origins ${ORIGIN_SHAPE}`;

/** `https://App.example.com` → `https://app.example.com`: what a browser sends as `Origin`; `null` for anything else. */
function origin(entry: unknown): string | null {
  if (typeof entry !== 'string' || !URL.canParse(entry)) return null;
  const url = new URL(entry);
  const bare = url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password && !entry.endsWith('/');
  // `https://*.example.com` parses as a URL; wildcards are not supported, so it must not pass.
  const host = /^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$/i.test(url.hostname);
  return (url.protocol === 'http:' || url.protocol === 'https:') && bare && host ? url.origin.toLowerCase() : null;
}

export const origins: Check<readonly string[], ReadonlySet<string>> = Object.freeze({
  allows: ORIGINS,
  resolve(value: unknown) {
    if (!Array.isArray(value)) return new Refusal(ORIGINS, value);
    const allowed = value.map(origin);
    return allowed.every((entry) => entry !== null) ? new Set(allowed) : new Refusal(ORIGINS, value);
  },
  text: {
    parse: (text: string) => text.split(',').map((entry) => entry.trim()),
    allows: `a comma-separated list of origins ${ORIGIN_SHAPE.replaceAll('"', '')}`,
  },
});

type Input<C> = C extends Check<infer In, unknown> ? In : never;
type Output<C> = C extends Check<unknown, infer Out> ? Out : never;

/** `false`, or what `check` allows (its `fields` and `text` kept); `allows` says so where the message should. */
export function falseOr<C extends Check<unknown, unknown>>(check: C, allows = check.allows): Omit<C, keyof Check<unknown, unknown>> & Check<Input<C> | false, Output<C> | false> {
  return Object.freeze({
    ...check,
    allows,
    resolve(value: unknown) {
      if (value === false) return false as const;
      const resolved = check.resolve(value);
      return resolved instanceof Refusal && resolved.field === undefined ? new Refusal(allows, value) : resolved;
    },
  }) as Omit<C, keyof Check<unknown, unknown>> & Check<Input<C> | false, Output<C> | false>;
}

/** A check of an object whose fields have checks of their own. */
type RecordCheck<T> = Check<Partial<T>, Readonly<T>> & { readonly fields: { readonly [F in keyof T]: Check<T[F], T[F]> } };

/** An object with these fields, each optional (left out: its default); others are ignored. Resolves frozen. */
export function record<T extends object>(fields: { [F in keyof T]: Check<T[F], T[F]> }, defaults: Readonly<T>): RecordCheck<T> {
  const allows = `{ ${Object.keys(fields).join(', ')} }`;
  return Object.freeze({
    allows,
    fields: Object.freeze(fields),
    resolve(value: unknown) {
      if (typeof value !== 'object' || value === null) return new Refusal(allows, value);
      const resolved: Partial<T> = {};
      for (const field of Object.keys(fields) as (keyof T & string)[]) {
        const given = (value as Partial<T>)[field];
        const result = given === undefined ? defaults[field] : fields[field].resolve(given);
        if (result instanceof Refusal) return new Refusal(result.allows, given, { field });
        resolved[field] = result;
      }
      return Object.freeze(resolved as T);
    },
  });
}
