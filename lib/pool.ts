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
