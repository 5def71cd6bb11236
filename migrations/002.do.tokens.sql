-- One-time WebSocket tokens (lib/tokens.ts). Only a SHA-256 hash of the token is stored: a copy
-- of this table (a backup, a replica, a log of queries) gives nobody a usable token.
CREATE TABLE task_events.tokens (
  token_hash     bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
  environment_id bigint      NOT NULL,
  user_id        bigint      NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  used_at        timestamptz
);

CREATE INDEX tokens_expires_at_idx ON task_events.tokens (expires_at);
