// The plugin in a process of its own (plugin-process.ts), driven over stdin/stdout: for what only a
// whole process shows: that it survives faults without crashing, and exits by itself after close().
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { Conditions } from './conditions.js';

/** The plugin in a child process (test/helpers/plugin-process.ts), to see whether it exits by itself. */
export class PluginProcess {
  readonly #child: ChildProcess;
  readonly #lines: Record<string, unknown>[] = [];
  readonly #conditions = new Conditions();
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  stderr = '';
  /** The port it listens on. */
  port = 0;

  private constructor(child: ChildProcess) {
    this.#child = child;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      this.#lines.push(JSON.parse(line) as Record<string, unknown>);
      this.#conditions.check();
    });
    child.stderr?.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    child.on('exit', (code, signal) => {
      this.exit = { code, signal };
      this.#conditions.check();
    });
  }

  /** Starts it against `url` and waits until it listens. */
  static async start(t: Test, url: string, pollInterval = 500): Promise<PluginProcess> {
    const script = fileURLToPath(new URL('./plugin-process.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      env: { ...process.env, PLUGIN_DATABASE_URL: url, PLUGIN_POLL_INTERVAL: String(pollInterval) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const plugin = new PluginProcess(child);
    t.teardown(() => {
      if (plugin.exit === null) child.kill('SIGKILL');
    });
    plugin.port = Number((await plugin.#waitForLine((line) => line.ready === true, 'the plugin process to listen', 20_000)).port);
    return plugin;
  }

  /** The endpoint URL with a fresh token of `environmentId`. */
  async endpoint(environmentId = 1): Promise<string> {
    const seen = this.#lines.length;
    this.#child.stdin?.write(`token ${environmentId}\n`);
    const line = await this.#waitForLine((line, index) => index >= seen && 'token' in line, 'a token', 10_000);
    if (typeof line.token !== 'string') throw new Error(`the plugin process could not mint a token: ${String(line.error)}`);
    return `ws://127.0.0.1:${this.port}/ws/events/tasks/?uuid=${line.token}`;
  }

  /** Whether it emitted the listener event `name` (`connected`, `reconnecting`). */
  emitted(name: string): boolean {
    return this.#lines.some((line) => line.event === name);
  }

  /** Asks it to run `app.close()`; resolves with what it reported. */
  async close(): Promise<Record<string, unknown>> {
    this.#child.stdin?.end('close\n');
    return this.#waitForLine((line) => 'closed' in line, 'app.close() in the plugin process', 10_000);
  }

  /** Resolves with how it exited; `null` (after killing it) when it is still alive after `timeout` ms. */
  async waitForExit(timeout: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | null> {
    try {
      await this.#waitFor(() => this.exit !== null, 'exit', timeout);
      return this.exit;
    } catch {
      this.#child.kill('SIGKILL');
      return null;
    }
  }

  async #waitForLine(accept: (line: Record<string, unknown>, index: number) => boolean, what: string, timeout: number): Promise<Record<string, unknown>> {
    await this.#waitFor(() => this.#lines.some(accept) || this.exit !== null, what, timeout);
    const line = this.#lines.find(accept);
    if (!line) throw new Error(`the plugin process exited (${JSON.stringify(this.exit)}) before ${what}: ${this.stderr.slice(-2000)}`);
    return line;
  }

  #waitFor(condition: () => boolean, what: string, timeout: number): Promise<void> {
    return this.#conditions.waitFor(condition, what, timeout);
  }
}
