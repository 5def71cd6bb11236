// What the benches of protocol v2 (resume.ts, storm.ts, fanout.ts) read in its frames, without
// parsing them where that would cost more than the server's work: which frame it is, the slice
// holding its events (a JSON array, as a v1 message), its cursor, its task ids. The frames are
// the server's (lib/frames.ts): `{"type":"ready","cursor":C}`, `{"type":"events","events":[…],
// "cursor":C}`, `{"type":"cursor","cursor":C}`; an error frame is `{"type":"error",…}`.
import type { ServerProcess } from '../harness/server-process.js';

/** The subprotocol a client offers to speak v2. */
export const V2 = 'task-events.v2';

const EVENTS_HEAD = Buffer.from('{"type":"events","events":');
const CURSOR_KEY = Buffer.from('"cursor":"');
const TASK_ID_KEY = Buffer.from('"task_id":');
const QUOTE = 0x22;
const DIGIT_0 = 0x30;

/** The frame's `type` (`ready`, `events`, `cursor`, `error`), or `null` when it is none of ours. */
export function frameType(frame: Buffer): string | null {
  const match = /^\{"type":"(\w+)"/.exec(frame.subarray(0, 24).toString('latin1'));
  return match ? (match[1] as string) : null;
}

/** An events frame's `events` (a JSON array, sharing the frame's bytes); `null` for another frame. */
export function eventsArray(frame: Buffer): Buffer | null {
  if (frame.compare(EVENTS_HEAD, 0, EVENTS_HEAD.length, 0, EVENTS_HEAD.length) !== 0) return null;
  const end = frame.lastIndexOf(']');
  return end === -1 ? null : frame.subarray(EVENTS_HEAD.length, end + 1);
}

/** The frame's cursor (the last `"cursor":"…"` of it: an events frame's comes after its events), or `null`. */
export function cursorOf(frame: Buffer): string | null {
  const at = frame.lastIndexOf(CURSOR_KEY);
  if (at === -1) return null;
  const start = at + CURSOR_KEY.length;
  const end = frame.indexOf(QUOTE, start);
  return end === -1 ? null : frame.toString('latin1', start, end);
}

/** Calls `each` with the task id of every event in `events` (a message's array), in order. */
export function forEachTaskId(events: Buffer, each: (taskId: number) => void): void {
  for (let at = events.indexOf(TASK_ID_KEY); at !== -1; at = events.indexOf(TASK_ID_KEY, at)) {
    at += TASK_ID_KEY.length;
    let taskId = 0;
    for (let digit = (events[at] as number) - DIGIT_0; digit >= 0 && digit <= 9; digit = (events[++at] as number) - DIGIT_0) taskId = taskId * 10 + digit;
    each(taskId);
  }
}

/** `count` tokens of the user of `environmentId`, issued by the plugin server, `concurrency` at a time. */
export async function tokensOf(server: ServerProcess, environmentId: number, count: number, concurrency = 50): Promise<string[]> {
  const tokens: string[] = [];
  let next = 0;
  const issueSome = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      tokens[index] = await server.token(environmentId);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, issueSome));
  return tokens;
}

/** The plugin's v2 endpoint with `token`, resuming from `cursor` when given. */
export function v2Url(server: ServerProcess, token: string, cursor: string | null = null): string {
  const url = server.url(token);
  return cursor === null ? url : `${url}&cursor=${encodeURIComponent(cursor)}`;
}
