// CPU time from /proc, for what PostgreSQL spends on behalf of each client when the server runs on
// this machine (pg_stat_statements is not loaded here, and it would not count an idle backend's
// work between statements anyway): each backend's user + system time, with what
// pg_stat_activity says the backend is (its database, application_name, last statement); the
// server's other processes; any process of ours (a plugin server); the machine as a whole.
import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import type pg from 'pg';

/** Milliseconds per clock tick, the unit of /proc/<pid>/stat's times (100 ticks a second almost everywhere). */
const TICK_MS = 1000 / (Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100);

/** The fields of /proc/<pid>/stat after the command (which may hold spaces): [state, ppid, …]; null once it has gone. */
async function statFields(pid: number): Promise<string[] | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** A process's CPU time so far (utime + stime), ms; null once it has gone. */
export async function processCpuMs(pid: number): Promise<number | null> {
  const fields = await statFields(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) * TICK_MS : null;
}

/** The machine's CPU time so far, ms summed over its cores: busy (not idle, not waiting for I/O) and in all. */
export async function machineCpuMs(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] as string;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.split(/\s+/).slice(1, 9).map(Number) as number[];
  const busy = (user as number) + (nice as number) + (system as number) + (irq as number) + (softirq as number) + (steal as number);
  return { busy: busy * TICK_MS, total: (busy + (idle as number) + (iowait as number)) * TICK_MS };
}

/** A process of the PostgreSQL server as pg_stat_activity shows it (null fields: an auxiliary process). */
export interface ServerProcessInfo {
  database: string | null;
  application: string;
  backendType: string;
  /** The backend's last (or current) statement. */
  query: string;
}

/** The PostgreSQL server's processes at one moment: CPU time of each, and what each is. */
export interface ServerCpuSample {
  /** performance.now() when taken. */
  at: number;
  /** pid → CPU time so far, ms: the postmaster and every process it started. */
  cpu: Map<number, number>;
  /** pid → what pg_stat_activity says of it (processes it does not list are missing). */
  info: Map<number, ServerProcessInfo>;
}

/**
 * Reads the CPU time of every process of the PostgreSQL server that `client` is connected to.
 * The server must run on this machine, in this pid namespace (its postmaster is the parent of
 * `client`'s backend); `client` must see every backend's statement (a superuser).
 */
export async function sampleServerCpu(client: pg.Client): Promise<ServerCpuSample> {
  const { rows } = await client.query<{ pid: number; datname: string | null; application_name: string | null; backend_type: string | null; query: string | null; own: number }>(
    'SELECT pid, datname, application_name, backend_type, query, pg_backend_pid() AS own FROM pg_stat_activity',
  );
  const own = rows[0]?.own as number;
  const postmaster = Number((await statFields(own))?.[1]);
  if (!postmaster) throw new Error(`no /proc/${own}/stat: is PostgreSQL on this machine (in this pid namespace)?`);
  const cpu = new Map<number, number>();
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name)).map(Number);
  await Promise.all(
    pids.map(async (pid) => {
      const fields = await statFields(pid);
      if (fields && (pid === postmaster || Number(fields[1]) === postmaster)) cpu.set(pid, (Number(fields[11]) + Number(fields[12])) * TICK_MS);
    }),
  );
  const at = performance.now(); // after the reads of /proc, which take a few ms (the query before may take longer)
  const info = new Map(rows.map((row) => [row.pid, { database: row.datname, application: row.application_name ?? '', backendType: row.backend_type ?? '', query: row.query ?? '' }]));
  return { at, cpu, info };
}

/**
 * CPU time each process spent between two samples, ms, with what it is (as the later sample
 * saw it, else the earlier). A process started in between counts all of its time; one that
 * ended in between counts nothing (its last moments are not in /proc any more).
 */
export function serverCpuBetween(before: ServerCpuSample, after: ServerCpuSample): { pid: number; ms: number; info: ServerProcessInfo | null }[] {
  return [...after.cpu].map(([pid, ms]) => ({ pid, ms: ms - (before.cpu.get(pid) ?? 0), info: after.info.get(pid) ?? before.info.get(pid) ?? null }));
}
