// The options of `npm run chaos`, from argv and the environment.
import { parseArgs } from 'node:util';
import { RESUMING } from './resuming.js';

/** Printed for --help and after a usage error. */
export const USAGE = `usage: npm run chaos [-- options]
  --minutes N | --seconds N   how long to run (default 60 s; env CHAOS_SECONDS)
  --clients N                 v1 clients connected at a time, 4 of them long-lived (default 24; env CHAOS_CLIENTS)
  --v2-clients N              clients of the client module, for the whole run (default 10, at most ${RESUMING.length}; env CHAOS_V2_CLIENTS)
  --restart-every N           seconds between instance restarts, about (default 120; env CHAOS_RESTART_EVERY)
  --writers N                 writer connections, one of them the bulk writer (default 4, at least 2; env CHAOS_WRITERS)
  --seed N                    seed of every random choice (default: random, printed; env CHAOS_SEED)
DATABASE_URL names a PostgreSQL server and a user that may create databases and roles; the run
uses a fresh database and role of its own there, dropped at the end. Unset: a throwaway embedded
PostgreSQL, started and stopped by the run.`;

/** What a run is told. */
export interface ChaosOptions {
  seconds: number;
  clients: number;
  v2Clients: number;
  restartEvery: number;
  writers: number;
  seed: number;
  databaseUrl: string | undefined;
}

/** A bad option: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** Reads the options; argv wins over the environment. Throws UsageError naming the bad one. */
export function readOptions(argv: string[], env: NodeJS.ProcessEnv): ChaosOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        minutes: { type: 'string' },
        seconds: { type: 'string' },
        clients: { type: 'string' },
        'v2-clients': { type: 'string' },
        'restart-every': { type: 'string' },
        writers: { type: 'string' },
        seed: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const numeric = (name: string, raw: string | boolean | undefined, min: number, max = Infinity): number | undefined => {
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new UsageError(`${name} must be an integer of at least ${min}${max < Infinity ? ` and at most ${max}` : ''}, got ${JSON.stringify(raw)}`);
    }
    return value;
  };
  const minutes = numeric('--minutes', values.minutes, 1);
  const seconds =
    numeric('--seconds', values.seconds, 10) ?? (minutes === undefined ? undefined : minutes * 60) ?? numeric('CHAOS_SECONDS', env.CHAOS_SECONDS, 10) ?? 60;
  const clients = numeric('--clients', values.clients, 1) ?? numeric('CHAOS_CLIENTS', env.CHAOS_CLIENTS, 1) ?? 24;
  const v2Clients = numeric('--v2-clients', values['v2-clients'], 0, RESUMING.length) ?? numeric('CHAOS_V2_CLIENTS', env.CHAOS_V2_CLIENTS, 0, RESUMING.length) ?? 10;
  const restartEvery = numeric('--restart-every', values['restart-every'], 10) ?? numeric('CHAOS_RESTART_EVERY', env.CHAOS_RESTART_EVERY, 10) ?? 120;
  const writers = numeric('--writers', values.writers, 2) ?? numeric('CHAOS_WRITERS', env.CHAOS_WRITERS, 2) ?? 4;
  const seed = numeric('--seed', values.seed, 0) ?? numeric('CHAOS_SEED', env.CHAOS_SEED, 0) ?? Math.floor(Math.random() * 2 ** 31);
  return { seconds, clients, v2Clients, restartEvery, writers, seed, databaseUrl: env.DATABASE_URL || undefined };
}
