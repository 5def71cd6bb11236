// The example server as `npm start` runs it (node --import tsx example/server.ts), in a child
// process on a database of the test's: started, stopped with SIGTERM like a deploy, started again
// on the same port.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Teardowns } from '../../harness/teardown.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;

/** One run of the example server; `stop()` ends it, `ExampleServer.start` makes the next one. */
export class ExampleServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly #child: ChildProcess;
  readonly #output: { text: string };

  private constructor(child: ChildProcess, url: string, output: { text: string }) {
    this.#child = child;
    this.url = url;
    this.port = Number(new URL(url).port);
    this.#output = output;
  }

  /**
   * Starts the example on `databaseUrl` and resolves once it listens; `port` 0: any free port.
   * `env` adds variables (e.g. TASK_EVENTS_MESSAGE_TIME_MS). Killed, if still running, at teardown.
   */
  static async start(t: Teardowns, options: { databaseUrl: string; port: number; env?: Record<string, string> }): Promise<ExampleServer> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'example/server.ts'], {
      cwd: REPO,
      env: { ...process.env, ...options.env, DATABASE_URL: options.databaseUrl, HOST: '127.0.0.1', PORT: String(options.port), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.teardown(() => void child.kill('SIGKILL'));
    const output = { text: '' };
    const keep = (text: string) => (output.text = (output.text + text).slice(-20_000));
    child.stderr?.on('data', (chunk: Buffer) => keep(chunk.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the example did not listen within ${START_TIMEOUT_MS} ms:\n${output.text}`)), START_TIMEOUT_MS);
      child.once('exit', (code) => reject(new Error(`the example exited (${code}) before it listened:\n${output.text}`)));
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        keep(`${line}\n`);
        let entry: { url?: string; msg?: string };
        try {
          entry = JSON.parse(line);
        } catch {
          return; // not a log line
        }
        if (entry.url && entry.msg?.startsWith('task events example on')) {
          clearTimeout(timer);
          resolve(entry.url);
        }
      });
    });
    return new ExampleServer(child, url, output);
  }

  /** What it printed last: its log lines and stderr. */
  get output(): string {
    return this.#output.text;
  }

  /** SIGTERM, as a deploy stops it; resolves with its exit code. */
  async stop(): Promise<number | null> {
    if (this.#child.exitCode !== null) return this.#child.exitCode;
    const exited = once(this.#child, 'exit');
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const [code] = await exited;
    clearTimeout(timer);
    return code as number | null;
  }
}
