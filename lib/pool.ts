import type pg from 'pg';

/** A pool client that keeps an error listener for as long as it is checked out. */
export interface CheckedOut extends pg.PoolClient {
  /** Returns the client; one that failed (or is given an error) is destroyed, not reused. */
  giveBack(error?: Error): void;
}

/**
 * Checks a client out of the pool with an 'error' listener attached at once. pg-pool removes its
 * own while a client is out, and a backend terminated between two queries would otherwise emit
 * an unhandled 'error' and end the process.
 */
export function checkout(pool: pg.Pool): Promise<CheckedOut> {
  return new Promise((resolve, reject) => {
    pool.connect((error, client) => {
      if (error || !client) return reject(error ?? new Error('no client'));
      let failure: Error | undefined;
      const onError = (clientError: Error): void => {
        failure = clientError;
      };
      client.on('error', onError);
      resolve(Object.assign(client, {
        giveBack(releaseError?: Error): void {
          client.off('error', onError);
          client.release(releaseError ?? failure);
        },
      }));
    });
  });
}

/** Whether an error says the connection failed, not the query: its backend was terminated, or its socket closed. */
export function connectionLost(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && (code.startsWith('08') || ['57P01', '57P02', '57P03'].includes(code))) return true;
  return typeof message === 'string' && /connection terminated|Connection ended|ECONNRESET/i.test(message);
}

/** Tries of {@link onLiveConnection}: several idle clients of the pool may have died at once. */
const LIVE_CONNECTION_TRIES = 4;

/**
 * Runs `query` again (a few times at most) when its pooled connection turned out to be dead: a
 * client whose backend was terminated while it sat idle (a failover, a restart) fails the first
 * query given to it before the pool has heard, and the pool drops it. For the handshake's queries,
 * so a client is not answered 500 for it.
 */
export async function onLiveConnection<T>(query: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await query();
    } catch (error) {
      if (!connectionLost(error) || attempt >= LIVE_CONNECTION_TRIES) throw error;
    }
  }
}

/** How long {@link endPool} waits for the connections to close. */
const END_WAIT = 5000;

/**
 * Ends a pool and waits (5 s at most) until its connections have closed. pg-pool's end() resolves
 * once it has asked them to close: a database stopped right after (an embedded one at shutdown)
 * terminates the ones still closing, and the pool reports that as an error of an idle client.
 */
export async function endPool(pool: pg.Pool): Promise<void> {
  let open = pool.totalCount;
  const closed = new Promise<void>((resolve) => {
    if (open === 0) resolve();
    pool.on('remove', () => {
      if (--open <= 0) resolve();
    });
  });
  await pool.end();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise((resolve) => (timer = setTimeout(resolve, END_WAIT)))]);
  clearTimeout(timer);
}
