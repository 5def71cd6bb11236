// The chaos run's plugin instances: two processes of the plugin on the one database (how it scales
// out), each stopped now and then while clients are connected and a new process started in its
// place — by SIGTERM (a deploy: it sends what is buffered, closes its sockets with 1001 and exits)
// or by SIGKILL (a crash: its sockets are cut, what it had buffered is gone). Clients go to any
// instance that is up, as behind a load balancer.
import type { PluginServerOptions, PluginStats } from '../../harness/lines.js';
import { ServerProcess } from '../../harness/server-process.js';
import type { Teardowns } from '../../harness/teardown.js';
import { sleep } from './random.js';

/** How an instance is stopped on purpose. */
export type Stop = 'deploy' | 'crash';

/** One process of the plugin: slot `a` or `b`, and which of that slot's processes it is. */
export interface Instance {
  /** `a1`, `b3`, ...: the slot and the process's number in it. */
  readonly name: string;
  readonly slot: string;
  readonly server: ServerProcess<PluginStats>;
  /** Seconds into the run when it was started. */
  readonly startedAt: number;
  /** Set when it is stopped on purpose: from then on no client is sent to it. */
  stopped: { how: Stop; at: number } | null;
}

/** One restart, for the log, the report and the result file. */
export interface RestartRecord {
  /** Seconds into the run. */
  at: number;
  how: Stop;
  stopped: string;
  started: string;
  /** Sockets it held just before. */
  clients: number;
  detail: string;
  /** False when a deploy did not exit 0 by itself in time. */
  clean: boolean;
}

/** What the instances need from the run. */
export interface InstancesContext {
  options: PluginServerOptions;
  teardowns: Teardowns;
  /** Seconds since the start of the run. */
  elapsed: () => number;
  log: (text: string) => void;
}

/** How long a new instance may take to listen and connect its listener. */
const START_TIMEOUT = 30_000;

/** Every instance of the run, the live ones by slot. */
export class Instances {
  readonly #context: InstancesContext;
  /** Every process started, in order. */
  readonly all: Instance[] = [];
  readonly restarts: RestartRecord[] = [];
  readonly #current = new Map<string, Instance>();

  constructor(context: InstancesContext) {
    this.#context = context;
  }

  /** Starts one instance per slot, one after the other. */
  async start(slots: readonly string[]): Promise<void> {
    for (const slot of slots) await this.#launch(slot);
  }

  /** The instances clients may go to: started, not stopped, not exited. */
  live(): Instance[] {
    return [...this.#current.values()].filter((instance) => instance.stopped === null && instance.server.exit === null);
  }

  /**
   * A live instance, at random (not from the seed: where a client lands is the load balancer's
   * business); throws when none is up.
   */
  pick(): Instance {
    const live = this.live();
    if (!live.length) throw new Error('no instance is up');
    return live[Math.floor(Math.random() * live.length)] as Instance;
  }

  /** The endpoint of a live instance (or of the newest, when none is up: the attempt fails and is retried). */
  endpoint(): string {
    const instance = this.live().length ? this.pick() : this.all[this.all.length - 1];
    return `ws://127.0.0.1:${instance?.server.port ?? 1}/ws/events/tasks/`;
  }

  /** Instances that exited without being told to. */
  crashed(): Instance[] {
    return this.all.filter((instance) => instance.server.crashed);
  }

  /** How many times every instance reported the plugin's event `name`. */
  count(name: string): number {
    return this.all.reduce((sum, instance) => sum + instance.server.count(name), 0);
  }

  /** The warnings of every instance, by message, counted. */
  warnings(): Map<string, number> {
    const merged = new Map<string, number>();
    for (const { server } of this.all) for (const [message, count] of server.warnings) merged.set(message, (merged.get(message) ?? 0) + count);
    return merged;
  }

  /** Resolves when every live instance has reported `connected` after now (or after `timeout` ms): how long each took, by name. */
  async reconnected(timeout: number): Promise<Map<string, number | null>> {
    const since = performance.now();
    const took = new Map<string, number | null>();
    await Promise.all(
      this.live().map(
        ({ name, server }) =>
          new Promise<void>((resolve) => {
            const done = (): void => {
              clearTimeout(timer);
              took.set(name, performance.now() - since);
              resolve();
            };
            const timer = setTimeout(() => {
              server.off('connected', done);
              took.set(name, null);
              resolve();
            }, timeout);
            server.once('connected', done);
          }),
      ),
    );
    return took;
  }

  /** Stops the instance in `slot` (a deploy or a crash) and starts a new one in its place. */
  async restart(slot: string, how: Stop): Promise<RestartRecord> {
    const { elapsed, log } = this.#context;
    const old = this.#current.get(slot) as Instance;
    const clients = (await old.server.stats(false, 5000).catch(() => null))?.connections ?? 0;
    const at = elapsed();
    old.stopped = { how, at };
    log(`restart: ${how === 'deploy' ? 'SIGTERM' : 'SIGKILL'} to instance ${old.name} (${clients} sockets)`);
    const stopping = performance.now();
    let detail: string;
    let clean = true;
    if (how === 'deploy') {
      const exit = await old.server.terminate(20_000);
      clean = exit?.code === 0;
      detail = exit ? `exited (${exit.code ?? exit.signal}) ${Math.round(performance.now() - stopping)} ms after SIGTERM` : 'still running 20 s after SIGTERM: killed';
    } else {
      old.server.kill();
      await old.server.waitForExit(5000);
      detail = 'killed';
    }
    const starting = performance.now();
    const fresh = await this.#launch(slot);
    detail += `; ${fresh.name} listening and connected ${((performance.now() - starting) / 1000).toFixed(1)} s later`;
    const record = { at: Math.round(at * 10) / 10, how, stopped: old.name, started: fresh.name, clients, detail, clean };
    this.restarts.push(record);
    log(`restart: ${old.name} ${detail}`);
    return record;
  }

  /** Closes every live instance (each sends what is buffered and closes its sockets with 1001). */
  async shutdown(): Promise<Map<string, Awaited<ReturnType<ServerProcess['shutdown']>>>> {
    const closing = new Map<string, Awaited<ReturnType<ServerProcess['shutdown']>>>();
    await Promise.all(this.live().map(async ({ name, server }) => closing.set(name, await server.shutdown())));
    return closing;
  }

  async #launch(slot: string): Promise<Instance> {
    const { options, teardowns, elapsed, log } = this.#context;
    const number = this.all.filter((instance) => instance.slot === slot).length + 1;
    const name = `${slot}${number}`;
    const server = await ServerProcess.startPlugin(options, { teardown: teardowns, timeout: START_TIMEOUT });
    const deadline = performance.now() + START_TIMEOUT;
    while (server.count('connected') === 0 && performance.now() < deadline && !server.exit) await sleep(50);
    if (server.count('connected') === 0) {
      server.kill();
      throw new Error(`instance ${name}'s listener did not connect:\n${server.stderr.slice(-2000)}`);
    }
    server.on('exit', (exit) => server.crashed && log(`! instance ${name} crashed: ${JSON.stringify(exit)}`));
    const instance: Instance = { name, slot, server, startedAt: elapsed(), stopped: null };
    this.all.push(instance);
    this.#current.set(slot, instance);
    return instance;
  }
}
