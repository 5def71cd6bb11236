// `npm start`: the example server. Embedded PostgreSQL unless DATABASE_URL is set; SIGTERM or
// SIGINT flush what is buffered, close every socket with 1001, stop the database, exit 0.
import type { FastifyInstance } from 'fastify';
import { fileURLToPath } from 'node:url';
import { buildApp } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { SERVER_OPTIONS } from './server-options.js';

/** Where `npm start` keeps the embedded cluster (git-ignored). */
const DATA_DIR = fileURLToPath(new URL('../.data/postgres/', import.meta.url));

const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/** A shutdown that takes longer than this (a hung connection) exits 1 instead of hanging. */
const SHUTDOWN_TIMEOUT_MS = 15_000;

interface Database {
  url: string;
  stop: () => Promise<void>;
  /** The embedded database's lines on what it did otherwise than asked (data kept elsewhere). */
  notices?: readonly string[];
}

let signalled: (signal: NodeJS.Signals) => void = () => {};
const shutdownRequested = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
let stopping = false;
let shutdownTimer: NodeJS.Timeout | undefined;

/** The first signal starts the shutdown; later ones (a terminal sends Ctrl-C to npm, tsx and us) wait for it. */
function onSignal(signal: NodeJS.Signals): void {
  stopping = true;
  signalled(signal);
  shutdownTimer ??= setTimeout(() => {
    console.error(`shutdown took longer than ${SHUTDOWN_TIMEOUT_MS} ms; exiting`);
    process.exit(1);
  }, SHUTDOWN_TIMEOUT_MS).unref();
}

async function openDatabase(config: Config): Promise<Database> {
  if (config.databaseUrl) return { url: config.databaseUrl, stop: async () => {} };
  const { startEmbeddedPostgres } = await import('./embedded.js');
  const port = config.embeddedPostgresPort === 0 ? undefined : config.embeddedPostgresPort;
  try {
    const embedded = await startEmbeddedPostgres({ databaseDir: DATA_DIR, persistent: true, port });
    return embedded;
  } catch (error) {
    throw new Error(
      `could not start the embedded PostgreSQL on port ${config.embeddedPostgresPort} (data in ${DATA_DIR}); ` +
        'is the port taken? Set EMBEDDED_PG_PORT to another port, or DATABASE_URL to use your own database',
      { cause: error },
    );
  }
}

function announce(app: FastifyInstance, database: Database, config: Config): void {
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  const wsUrl = `ws://${host}:${port}/ws/events/tasks/?uuid=<uuid>`;
  for (const notice of database.notices ?? []) app.log.info(notice);
  app.log.info(
    { url, database: database.url.replace(/:[^:@/]*@/, ':***@'), embedded: !config.databaseUrl },
    `task events example on ${url} - try: curl -H 'Authorization: Token demo-key-1' ${url}/api/users/ws-auth/ then npx wscat -c '${wsUrl}'`,
  );
}

async function main(): Promise<void> {
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, onSignal);
  const config = loadConfig();
  const database = await openDatabase(config);
  try {
    let app: FastifyInstance | undefined;
    try {
      // A signal during startup (the first run initialises the cluster) skips what is left of it.
      if (!stopping) app = await buildApp({ ...config, databaseUrl: database.url }, SERVER_OPTIONS);
      if (app && !stopping) {
        await app.listen({ host: config.host, port: config.port });
        announce(app, database, config);
      }
      const signal = await shutdownRequested;
      app?.log.info({ signal }, 'shutting down: flushing events, closing sockets with 1001');
    } finally {
      await app?.close();
    }
  } finally {
    await database.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    if (error instanceof ConfigError) console.error(`configuration error: ${error.message}`);
    else console.error(error);
    process.exit(1);
  },
);
