// The options of `npm run chaos`, from argv and the environment.
import { parseArgs } from 'node:util';

/** Printed for --help and after a usage error. */
export const USAGE = `usage: npm run chaos [-- options]
  --minutes N | --seconds N   how long to run (default 60 s; env CHAOS_SECONDS)
  --clients N                 clients connected at a time, 4 of them for the whole run (default 24; env CHAOS_CLIENTS)
  --writers N                 writer connections, one of them the bulk writer (default 4, at least 2; env CHAOS_WRITERS)
  --seed N                    seed of every random choice (default: random, printed; env CHAOS_SEED)
DATABASE_URL names a PostgreSQL server and a user that may create databases and roles; the run
uses a fresh database and role of its own there, dropped at the end. Unset: a throwaway embedded
PostgreSQL, started and stopped by the run.`;

/** What a run is told. */
export interface ChaosOptions {
  seconds: number;
  clients: number;
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
  const numeric = (name: string, raw: string | boolean | undefined, min: number): number | undefined => {
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) throw new UsageError(`${name} must be an integer of at least ${min}, got ${JSON.stringify(raw)}`);
    return value;
  };
  const minutes = numeric('--minutes', values.minutes, 1);
  const seconds =
    numeric('--seconds', values.seconds, 10) ?? (minutes === undefined ? undefined : minutes * 60) ?? numeric('CHAOS_SECONDS', env.CHAOS_SECONDS, 10) ?? 60;
  const clients = numeric('--clients', values.clients, 1) ?? numeric('CHAOS_CLIENTS', env.CHAOS_CLIENTS, 1) ?? 24;
  const writers = numeric('--writers', values.writers, 2) ?? numeric('CHAOS_WRITERS', env.CHAOS_WRITERS, 2) ?? 4;
  const seed = numeric('--seed', values.seed, 0) ?? numeric('CHAOS_SEED', env.CHAOS_SEED, 0) ?? Math.floor(Math.random() * 2 ** 31);
  return { seconds, clients, writers, seed, databaseUrl: env.DATABASE_URL || undefined };
}
