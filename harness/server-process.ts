// The parent's side of a server in a child process (the plugin, harness/plugin-server.ts, or the
// bare-ws reference of bench/): starts it, asks it things over the lines of lines.ts, hears its
// events, and notices when it exits without being asked to.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Conditions } from './conditions.js';
import type { Line, PluginServerOptions, PluginStats, ServerStats } from './lines.js';
import type { Teardowns } from './teardown.js';

/** How the child ended. */
export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** How to start a {@link ServerProcess}. */
export interface StartOptions {
  /** A script speaking the lines of lines.ts. */
  script: string;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Node flags before the script, e.g. `--expose-gc`. */
  nodeFlags?: readonly string[];
  /** How long it may take to listen, ms (default 60,000). */
  timeout?: number;
  /** Killed, if still running, when this tears down (a test's `t`). */
  teardown?: Teardowns;
}

const PLUGIN_SERVER = fileURLToPath(new URL('./plugin-server.ts', import.meta.url));
const STDERR_KEPT = 20_000;

/**
 * A server in a child process. Emits each event line it reports under its name (`connected`,
 * `reconnecting`, `warning`, ... with the line), and `exit` (ServerExit).
 */
export class ServerProcess<Stats extends ServerStats = ServerStats> extends EventEmitter {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, (line: Line) => void>();
  readonly #conditions = new Conditions();
  readonly #counts = new Map<string, number>();
  readonly #flushes: { at: number; events: number }[] = [];
  #nextId = 0;
  #closing = false;
  port = 0;
  exit: ServerExit | null = null;
  /** The tail of the child's stderr (a crash's stack trace ends up here). */
  stderr = '';
  /** Warnings by message (and cause), counted. */
  readonly warnings = new Map<string, number>();

  private constructor(child: ChildProcess) {
    super();
    this.#child = child;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
      } catch {
        return this.#keepStderr(`${text}\n`); // not ours: a stray print
      }
      this.#dispatch(line);
    });
    child.stdin?.on('error', () => {}); // EPIPE once it has exited: reported by 'close'
    child.stderr?.on('data', (chunk: Buffer) => this.#keepStderr(chunk.toString()));
    // 'close', not 'exit': every line it wrote has been read by then.
    child.on('close', (code, signal) => {
      this.exit = { code, signal };
      for (const resolve of this.#pending.values()) resolve({ error: `the server exited (${code ?? signal})` });
      this.#pending.clear();
      this.#conditions.check();
      this.emit('exit', this.exit);
    });
  }

  /** Starts the plugin server with `options` (harness/plugin-server.ts) and waits until it listens. */
  static startPlugin(options: PluginServerOptions, start: Omit<StartOptions, 'script' | 'env'> = {}): Promise<ServerProcess<PluginStats>> {
    return ServerProcess.start<PluginStats>({ ...start, script: PLUGIN_SERVER, env: { PLUGIN_SERVER_OPTIONS: JSON.stringify(options) } });
  }

  /** Starts `script` and waits until it listens. */
  static async start<Stats extends ServerStats = ServerStats>(options: StartOptions): Promise<ServerProcess<Stats>> {
    const { script, env = {}, nodeFlags = [], timeout = 60_000, teardown } = options;
    const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', script], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const server = new ServerProcess<Stats>(child);
    teardown?.teardown(() => server.kill());
    try {
      await server.#conditions.waitFor(() => server.port > 0 || server.exit !== null, 'the server to listen', timeout);
    } catch (error) {
      server.kill();
      throw new Error(`the server did not start:\n${server.stderr.slice(-3000)}`, { cause: error });
    }
    if (server.exit) throw new Error(`the server exited (${JSON.stringify(server.exit)}) before it listened:\n${server.stderr.slice(-3000)}`);
    return server;
  }

  /** The child's process id (its CPU time is in /proc/<pid>/stat). */
  get pid(): number {
    return this.#child.pid as number;
  }

  /** True when it exited without being asked to close. */
  get crashed(): boolean {
    return this.exit !== null && !this.#closing;
  }

  /** How many times it reported the event `name` (`connected`, `reconnecting`, ...). */
  count(name: string): number {
    return this.#counts.get(name) ?? 0;
  }

  /** Sends a request; resolves with the answer, rejects with its error, on timeout or exit. */
  async request(op: string, body: Line = {}, timeout = 10_000): Promise<Line> {
    if (this.exit) throw new Error('the server has exited');
    const stdin = this.#child.stdin as Writable;
    if (stdin.writableEnded) throw new Error('the server was asked to close');
    const id = ++this.#nextId;
    const answer = await new Promise<Line>((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve({ error: `no answer to ${op} within ${timeout} ms` });
      }, timeout);
      this.#pending.set(id, (line) => {
        clearTimeout(timer);
        resolve(line);
      });
      const text = `${JSON.stringify({ id, op, ...body })}\n`;
      // After `close` the child reads no more: nothing else is sent.
      if (op === 'close') stdin.end(text);
      else stdin.write(text);
    });
    if (answer.error !== undefined) throw new Error(String(answer.error));
    return answer;
  }

  /** A fresh token for a user of `environmentId`; rejects with the server's error. */
  async token(environmentId: number): Promise<string> {
    const answer = await this.request('token', { environmentId }, 20_000).catch((error: Error) => {
      throw new Error(`no token: ${error.message}`);
    });
    return String(answer.token);
  }

  /** The plugin's endpoint with `token` and the filter, if any. */
  url(token: string, objectClassIds: readonly number[] | null = null): string {
    const query = new URLSearchParams({ uuid: token });
    if (objectClassIds) query.set('object_class_ids', objectClassIds.join(','));
    return `ws://127.0.0.1:${this.port}/ws/events/tasks/?${query}`;
  }

  /** The plugin's endpoint with a fresh token of `environmentId` and the filter, if any. */
  async endpoint(environmentId = 1, objectClassIds: readonly number[] | null = null): Promise<string> {
    return this.url(await this.token(environmentId), objectClassIds);
  }

  /** Memory and counters now; with `gc`, after a full collection (needs --expose-gc). */
  async stats(gc = false, timeout = 10_000): Promise<Stats> {
    return (await this.request('stats', { gc }, timeout)).stats as Stats;
  }

  /** Resolves when it counts exactly `count` connections (the plugin: joined to the hub). */
  async untilConnections(count: number, timeout: number): Promise<void> {
    const deadline = performance.now() + timeout;
    for (;;) {
      const { connections } = await this.stats();
      if (connections === count) return;
      if (performance.now() > deadline) throw new Error(`the server counts ${connections} of ${count} connections`);
      await sleep(50);
    }
  }

  /**
   * When the plugin server handed the last of `events` events, sent from `from` (epoch ms) on, to
   * its sockets; `null` if it did not report them within `timeout`. Needs `flushed` among its events.
   */
  async sentAt(from: number, events: number, timeout: number): Promise<number | null> {
    const flushes = (): { at: number; events: number }[] => this.#flushes.filter((flush) => flush.at >= from);
    const sent = (): number => flushes().reduce((sum, flush) => sum + flush.events, 0);
    try {
      await this.#conditions.waitFor(() => sent() >= events, `the server to report ${events} events sent`, timeout);
    } catch {
      return null;
    }
    return Math.max(...flushes().map((flush) => flush.at));
  }

  /** Asks it to close (the plugin: `app.close()`); resolves with its answer (`{ closed, ms }`). */
  close(timeout = 10_000): Promise<Line> {
    this.#closing = true;
    return this.request('close', {}, timeout);
  }

  /** Resolves with how it exited; `null` (after killing it) when it is still alive after `timeout` ms. */
  async waitForExit(timeout: number): Promise<ServerExit | null> {
    try {
      await this.#conditions.waitFor(() => this.exit !== null, 'the server to exit', timeout);
      return this.exit;
    } catch {
      this.kill();
      return null;
    }
  }

  /**
   * Closes it and waits for the process to exit by itself; kills it after `timeout` ms. Returns
   * how long close took (as it reported) and how it exited.
   */
  async shutdown(timeout = 20_000): Promise<{ closeMs: number | null; exitedBySelf: boolean; exit: ServerExit | null }> {
    if (this.exit) return { closeMs: null, exitedBySelf: false, exit: this.exit };
    const answer = this.close(timeout).catch(() => null);
    const exitedBySelf = (await this.waitForExit(timeout)) !== null;
    const closed = await answer;
    return { closeMs: typeof closed?.ms === 'number' ? closed.ms : null, exitedBySelf, exit: this.exit };
  }

  /** A crash: SIGKILL, nothing flushed, sockets cut (1006). */
  kill(): void {
    this.#closing = true;
    if (this.exit === null) this.#child.kill('SIGKILL');
  }

  /** A deploy: SIGTERM (the plugin flushes, closes its sockets with 1001 and exits); resolves with how it exited. */
  async terminate(timeout = 20_000): Promise<ServerExit | null> {
    this.#closing = true;
    if (this.exit === null) this.#child.kill('SIGTERM');
    return this.waitForExit(timeout);
  }

  #keepStderr(text: string): void {
    this.stderr = (this.stderr + text).slice(-STDERR_KEPT);
  }

  #dispatch(line: Line): void {
    if (typeof line.id === 'number') {
      const resolve = this.#pending.get(line.id);
      this.#pending.delete(line.id);
      return resolve?.(line);
    }
    const name = String(line.event);
    this.#counts.set(name, this.count(name) + 1);
    if (name === 'ready') this.port = Number(line.port);
    if (name === 'flushed') this.#flushes.push({ at: Number(line.at), events: Number(line.events) });
    if (name === 'warning') {
      const key = line.cause ? `${String(line.message)} (${String(line.cause)})` : String(line.message);
      this.warnings.set(key, (this.warnings.get(key) ?? 0) + 1);
    }
    this.#conditions.check();
    this.emit(name, line);
  }
}
