// The parent's side of bench/chaos/server.ts: starts the plugin server in a child process, mints
// tokens and samples memory through it, and notices when it exits without being asked to.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChaosServerOptions, ServerSample } from './server.js';

type Line = Record<string, unknown>;

/** How the child ended. */
export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const STDERR_KEPT = 20_000;

/**
 * The plugin server in a child process. Emits `connected`, `reconnecting`, `warning` (message),
 * `slow-consumer`, `heartbeat-timeout` as the plugin does, and `exit` (ServerExit).
 */
export class ServerProcess extends EventEmitter {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, (line: Line) => void>();
  #nextId = 0;
  #closing = false;
  #onLine: (line: Line) => void = () => {};
  port = 0;
  exit: ServerExit | null = null;
  /** The tail of the child's stderr (a crash's stack trace ends up here). */
  stderr = '';
  /** Warnings by message (and cause), counted. */
  readonly warnings = new Map<string, number>();
  readonly counts = { connected: 0, reconnecting: 0, slowConsumers: 0, heartbeatTimeouts: 0 };

  private constructor(child: ChildProcess) {
    super();
    this.#child = child;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      let line: Line;
      try {
        line = JSON.parse(text) as Line;
      } catch {
        this.stderr = `${this.stderr}${text}\n`.slice(-STDERR_KEPT); // not ours: a stray print
        return;
      }
      this.#dispatch(line);
    });
    child.stderr?.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-STDERR_KEPT)));
    child.on('exit', (code, signal) => {
      this.exit = { code, signal };
      for (const resolve of this.#pending.values()) resolve({ error: `the server exited (${code ?? signal})` });
      this.#pending.clear();
      this.emit('exit', this.exit);
    });
  }

  /** Starts the server and waits until it listens. */
  static async start(options: ChaosServerOptions, timeout = 60_000): Promise<ServerProcess> {
    const script = fileURLToPath(new URL('./server.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      env: { ...process.env, CHAOS_SERVER_OPTIONS: JSON.stringify(options) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const server = new ServerProcess(child);
    const ready = await new Promise<Line | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), timeout);
      server.#onLine = (line) => {
        if (line.ready !== true) return;
        clearTimeout(timer);
        resolve(line);
      };
      server.once('exit', () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
    if (!ready) {
      child.kill('SIGKILL');
      throw new Error(`the plugin server did not start (${JSON.stringify(server.exit)}):\n${server.stderr.slice(-3000)}`);
    }
    server.port = Number(ready.port);
    return server;
  }

  /** True when it exited without being asked to close. */
  get crashed(): boolean {
    return this.exit !== null && !this.#closing;
  }

  /** A fresh token for a user of `environmentId`; rejects with the server's error. */
  async token(environmentId: number): Promise<string> {
    const line = await this.#request({ op: 'token', environmentId }, 20_000);
    if (typeof line.token !== 'string') throw new Error(`no token: ${String(line.error)}`);
    return line.token;
  }

  /** The endpoint with a fresh token and the filter, if any. */
  async endpoint(environmentId: number, objectClassIds: readonly number[] | null, token?: string): Promise<string> {
    const query = new URLSearchParams({ uuid: token ?? (await this.token(environmentId)) });
    if (objectClassIds) query.set('object_class_ids', objectClassIds.join(','));
    return `ws://127.0.0.1:${this.port}/ws/events/tasks/?${query}`;
  }

  /** Memory and counters now; `null` when the server does not answer in time. */
  async sample(): Promise<ServerSample | null> {
    const line = await this.#request({ op: 'sample' }, 5_000);
    return (line.sample as ServerSample | undefined) ?? null;
  }

  /**
   * Asks for `app.close()` (flush, close every socket with 1001) and waits for the process to exit
   * by itself; kills it after `timeout` ms. Returns how long close() took and how it exited.
   */
  async close(timeout = 20_000): Promise<{ closeMs: number | null; exitedBySelf: boolean; exit: ServerExit | null }> {
    if (this.exit) return { closeMs: null, exitedBySelf: false, exit: this.exit };
    this.#closing = true;
    let closeMs: number | null = null;
    this.#onLine = (line) => {
      if (line.closed === true) closeMs = Number(line.ms);
    };
    this.#child.stdin?.end(`${JSON.stringify({ op: 'close' })}\n`);
    const exited = await new Promise<boolean>((resolve) => {
      if (this.exit) return resolve(true);
      const timer = setTimeout(() => resolve(false), timeout);
      this.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!exited) this.kill();
    return { closeMs, exitedBySelf: exited, exit: this.exit };
  }

  kill(): void {
    this.#closing = true;
    if (this.exit === null) this.#child.kill('SIGKILL');
  }

  #request(body: Line, timeout: number): Promise<Line> {
    if (this.exit) return Promise.resolve({ error: 'the server has exited' });
    const id = ++this.#nextId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        resolve({ error: `no answer within ${timeout} ms` });
      }, timeout);
      this.#pending.set(id, (line) => {
        clearTimeout(timer);
        resolve(line);
      });
      this.#child.stdin?.write(`${JSON.stringify({ id, ...body })}\n`);
    });
  }

  #dispatch(line: Line): void {
    if (typeof line.id === 'number') {
      const resolve = this.#pending.get(line.id);
      this.#pending.delete(line.id);
      return resolve?.(line);
    }
    switch (line.event) {
      case 'connected':
        this.counts.connected++;
        break;
      case 'reconnecting':
        this.counts.reconnecting++;
        break;
      case 'slow-consumer':
        this.counts.slowConsumers++;
        break;
      case 'heartbeat-timeout':
        this.counts.heartbeatTimeouts++;
        break;
      case 'warning': {
        const key = line.cause ? `${String(line.message)} (${String(line.cause)})` : String(line.message);
        this.warnings.set(key, (this.warnings.get(key) ?? 0) + 1);
        break;
      }
      default:
        return this.#onLine(line);
    }
    this.emit(String(line.event), line);
  }
}
