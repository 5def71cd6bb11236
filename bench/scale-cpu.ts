// The CPU of a scale-out window (bench/scale-out.ts), split by who spent it: each instance's pool
// backends (its outbox reads and doorbell looks) and LISTEN connection, told apart by the
// application_name each instance connects with; the writer's backend; the rest of the bench
// database and other databases; the instances' processes, the bench's own, the machine.
import type pg from 'pg';
import type { PluginStats } from '../harness/lines.js';
import type { ServerProcess } from '../harness/server-process.js';
import { machineCpuMs, processCpuMs, sampleServerCpu, serverCpuBetween, type ServerCpuSample } from './cpu-time.js';

/** Every instance's application_name starts with this, then its number; the writer's is `…-writer`. */
export const APPLICATION = 'scale-out';

/** `databaseUrl` connecting as `application_name` (how the instances' backends are told apart). */
export function asApplication(databaseUrl: string, name: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('application_name', name);
  return url.toString();
}

/** One instance's share of a window. */
export interface InstanceFigures {
  /** CPU ms of its pool backends (the outbox reads and doorbell looks), and of its LISTEN connection. */
  readsCpuMs: number;
  listenCpuMs: number;
  /** Pool backends seen. */
  readBackends: number;
  /** Outbox reads (`caught-up`) and events read. */
  reads: number;
  eventsRead: number;
  /** CPU ms of the instance's process. */
  processCpuMs: number;
}

/** The CPU of one window, split by who spent it; ms of CPU per second of the window unless said. */
export interface WindowCpu {
  seconds: number;
  perInstance: InstanceFigures[];
  /** The outbox reads' DB CPU: per instance (mean) and in all, ms/s; per read, ms; per event read, µs. */
  readsCpu: { perInstance: number; total: number; perRead: number; perEventMicros: number };
  /** Reads a second, per instance (mean); events read per read. */
  readsPerSecond: number;
  eventsPerRead: number;
  /** The LISTEN connections in all; the writer's backend; the bench database's backends and the server's background processes in all; other databases' backends (other work on the server). */
  listenCpu: number;
  /** null when its backend had gone by the window's end (a machine so busy that the window closed late). */
  writerCpu: number | null;
  databaseCpu: number;
  otherDatabasesCpu: number;
  /** The instances' processes in all; the clients' (the bench's own) process; the machine's busy cores (of `cores`). */
  instancesCpu: number;
  clientsCpu: number;
  machineBusy: number;
  cores: number;
  /** The machine's busy time not accounted for above: the writer's process, and any other work on the machine (a disturbed run). */
  elsewhere: number;
}

/** One moment: the database server's processes, the instances', the machine's, ours. */
export interface Sample {
  server: ServerCpuSample;
  instances: { cpuMs: number; reads: number; eventsRead: number }[];
  machine: { busy: number; total: number };
  clients: NodeJS.CpuUsage;
}

export async function sample(monitor: pg.Client, servers: readonly ServerProcess<PluginStats>[]): Promise<Sample> {
  const [server, instances, machine] = await Promise.all([
    sampleServerCpu(monitor),
    Promise.all(servers.map(async (each) => ({ cpuMs: (await processCpuMs(each.pid)) ?? NaN, reads: each.count('caught-up'), eventsRead: (await each.stats()).eventsReceived }))),
    machineCpuMs(),
  ]);
  return { server, instances, machine, clients: process.cpuUsage() };
}

/** Whether a backend of an instance is its LISTEN connection (pg-listen's statements) rather than one of its pool. */
function isListenConnection(query: string): boolean {
  return query.startsWith('LISTEN') || query === 'SELECT pg_backend_pid()';
}

const INSTANCE = new RegExp(`^${APPLICATION}-(\\d+)$`);

export function round(value: number, digits = 1): number {
  return Math.round(value * 10 ** digits) / 10 ** digits;
}

/** The CPU spent between two samples of the same instances, split by who spent it. */
export function windowCpu(before: Sample, after: Sample, database: string): WindowCpu {
  const seconds = (after.server.at - before.server.at) / 1000;
  const perInstance: InstanceFigures[] = after.instances.map((each, index) => ({
    readsCpuMs: 0,
    listenCpuMs: 0,
    readBackends: 0,
    reads: each.reads - (before.instances[index]?.reads ?? 0),
    eventsRead: each.eventsRead - (before.instances[index]?.eventsRead ?? 0),
    processCpuMs: each.cpuMs - (before.instances[index]?.cpuMs ?? 0),
  }));
  let writer: number | null = null;
  let ours = 0;
  let others = 0;
  for (const { ms, info } of serverCpuBetween(before.server, after.server)) {
    if (info?.database && info.database !== database) {
      others += ms;
      continue;
    }
    ours += ms;
    const instance = INSTANCE.exec(info?.application ?? '');
    if (info?.application === `${APPLICATION}-writer`) writer = (writer ?? 0) + ms;
    else if (instance) {
      const figures = perInstance[Number(instance[1])] as InstanceFigures;
      if (isListenConnection(info?.query ?? '')) figures.listenCpuMs += ms;
      else {
        figures.readsCpuMs += ms;
        figures.readBackends++;
      }
    }
  }
  const sum = (pick: (figures: InstanceFigures) => number): number => perInstance.reduce((total, figures) => total + pick(figures), 0);
  const readsCpuMs = sum((figures) => figures.readsCpuMs);
  const reads = sum((figures) => figures.reads);
  const eventsRead = sum((figures) => figures.eventsRead);
  const clientsMicros = after.clients.user + after.clients.system - before.clients.user - before.clients.system;
  return {
    seconds: round(seconds, 2),
    perInstance,
    readsCpu: {
      perInstance: round(readsCpuMs / perInstance.length / seconds),
      total: round(readsCpuMs / seconds),
      perRead: round(readsCpuMs / reads, 3),
      perEventMicros: round((readsCpuMs * 1000) / eventsRead),
    },
    readsPerSecond: round(reads / perInstance.length / seconds),
    eventsPerRead: round(eventsRead / reads, 2),
    listenCpu: round(sum((figures) => figures.listenCpuMs) / seconds),
    writerCpu: writer === null ? null : round(writer / seconds),
    databaseCpu: round(ours / seconds),
    otherDatabasesCpu: round(others / seconds),
    instancesCpu: round(sum((figures) => figures.processCpuMs) / seconds),
    clientsCpu: round(clientsMicros / 1000 / seconds),
    machineBusy: round((after.machine.busy - before.machine.busy) / seconds),
    cores: Math.round((after.machine.total - before.machine.total) / seconds / 1000),
    elsewhere: round((after.machine.busy - before.machine.busy - ours - others - sum((figures) => figures.processCpuMs) - clientsMicros / 1000) / seconds),
  };
}
