// The line protocol between a server in a child process (harness/plugin-server.ts, or the bare-ws
// reference of bench/reference-server.ts) and its parent (harness/server-process.ts): one JSON
// object a line, each way.
//   parent → child  requests  {"id":1,"op":"token","environmentId":1}  {"id":2,"op":"stats","gc":true}
//                             {"id":3,"op":"close"}  (the reference: {"id":4,"op":"send"})
//   child → parent  answers   {"id":1,"token":"…"}  {"id":2,"stats":{…}}  {"id":3,"closed":true,"ms":12}
//                             {"id":N,"error":"…"}
//                   events    {"event":"ready","port":N}, then the plugin's own: {"event":"connected"},
//                             {"event":"warning","message":"…","cause":"…"}, {"event":"flushed","events":N,…}
//                             (each with `at`, the child's wall clock)
import { createInterface } from 'node:readline';
import type { TaskEventsOptions, TaskEventsStats } from '../lib/index.js';

/** One line of the protocol. */
export type Line = Record<string, unknown>;

/** A server's memory, bytes. */
export interface MemoryStats {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

/** What any server of the protocol answers to `stats`: its memory and its open connections. */
export interface ServerStats extends MemoryStats {
  /** As the server counts them (the plugin: joined to the hub). */
  connections: number;
}

/** What the plugin server answers to `stats`: its memory and `app.taskEvents.stats()`. */
export type PluginStats = MemoryStats & TaskEventsStats;

/** The plugin's events the plugin server reports unless told otherwise: the rare, lifecycle ones. */
export const LIFECYCLE_EVENTS: readonly string[] = ['connected', 'reconnecting', 'warning', 'slow-consumer', 'heartbeat-timeout'];

/** How the plugin server is set up: passed as JSON in PLUGIN_SERVER_OPTIONS. */
export interface PluginServerOptions {
  /** The plugin's options (those that JSON can carry); `rateLimit` defaults to `false`. */
  plugin: Omit<TaskEventsOptions, 'pool' | 'authenticate'>;
  /**
   * A host app's own async hook on every request (a session lookup, say) takes up to this many
   * milliseconds: it holds each handshake open between its outbox position and its join. Default 0: none.
   */
  hostHookDelay?: number;
  /** The plugin's events to report as lines (default {@link LIFECYCLE_EVENTS}; add `flushed` to time sends). */
  events?: readonly string[];
}

/** Writes one line on stdout (the child's side). */
export function say(line: Line): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Reports an event, stamped with the wall clock (the child's side). */
export function report(event: string, detail: Line = {}): void {
  say({ event, at: Date.now(), ...detail });
}

/** Memory now; with `gc`, after a full collection (when run with --expose-gc). */
export function memory(gc: boolean): MemoryStats {
  if (gc) global.gc?.();
  const { rss, heapUsed, heapTotal, external } = process.memoryUsage();
  return { rss, heapUsed, heapTotal, external };
}

/** What a child does with each `op`; what it returns is the answer, a throw becomes `error`. */
export type Handlers = Record<string, (request: Line) => Line | Promise<Line>>;

/**
 * Answers the parent's requests on stdin (the child's side). At `close` it stops reading stdin
 * before the handler runs: once the server is closed, nothing may keep the process alive, and the
 * parent waits for it to exit by itself.
 */
export function answerRequests(handlers: Handlers): void {
  const input = createInterface({ input: process.stdin });
  input.on('line', (text) => {
    const request = JSON.parse(text) as Line;
    if (request.op === 'close') {
      input.close();
      process.stdin.destroy();
    }
    const handler = handlers[String(request.op)];
    Promise.resolve(request)
      .then((request) => {
        if (!handler) throw new Error(`unknown op ${JSON.stringify(request.op)}`);
        return handler(request);
      })
      .then(
        (answer) => say({ id: request.id, ...answer }),
        (error: Error) => say({ id: request.id, error: error.message }),
      );
  });
}
