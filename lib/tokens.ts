import { createHash, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Identity } from './options.js';
import { onLiveConnection } from './pool.js';

/** Accepts what `crypto.randomUUID()` makes: a UUID v4, any letter case. */
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** True when `token` has the shape of a token we issue; nothing else is looked up. */
export function isTokenShaped(token: unknown): token is string {
  return typeof token === 'string' && UUID_V4.test(token);
}

function hash(token: string): Buffer {
  return createHash('sha256').update(token.toLowerCase()).digest();
}

/**
 * The default one-time token store, in `task_events.tokens`. Only the SHA-256 of a token is
 * stored; a token is consumed by one atomic UPDATE, so it opens one connection at most, even when
 * two instances race for it.
 */
export class TokenStore {
  readonly #pool: pg.Pool;
  readonly #ttl: number;

  constructor(pool: pg.Pool, ttl: number) {
    this.#pool = pool;
    this.#ttl = ttl;
  }

  /** Mints a token for one user of one environment, valid once for `ttl` milliseconds. */
  async issue({ environmentId, userId }: Identity): Promise<string> {
    if (!Number.isSafeInteger(environmentId) || !Number.isSafeInteger(userId)) {
      throw new TypeError('issueToken: environmentId and userId must be integers');
    }
    const token = randomUUID();
    await this.#pool.query(
      `INSERT INTO task_events.tokens (token_hash, environment_id, user_id, expires_at)
       VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision / 1000))`,
      [hash(token), environmentId, userId, this.#ttl],
    );
    return token;
  }

  /** The token's identity, marking it used; `null` when unknown, expired or used already. */
  async consume(token: string): Promise<Identity | null> {
    const { rows } = await onLiveConnection(() => this.#pool.query<{ environment_id: string; user_id: string }>(
      `UPDATE task_events.tokens SET used_at = now()
       WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
       RETURNING environment_id, user_id`,
      [hash(token)],
    ));
    const row = rows[0];
    return row ? { environmentId: Number(row.environment_id), userId: Number(row.user_id) } : null;
  }

  /** Deletes tokens that expired more than `graceMs` ago; returns how many. */
  async prune(graceMs = 60_000): Promise<number> {
    const { rowCount } = await this.#pool.query(
      `DELETE FROM task_events.tokens WHERE expires_at < now() - make_interval(secs => $1::double precision / 1000)`,
      [graceMs],
    );
    return rowCount ?? 0;
  }
}
