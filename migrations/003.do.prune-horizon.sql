-- The pruner's clock of commits (lib/retention.ts). Each round records the oldest transaction
-- still running (its snapshot's xmin): every transaction below it had ended by then. A row may be
-- deleted once such a mark older than the retention is above its xid: its transaction committed
-- at least the retention ago, however long it stayed open before (created_at only says when it
-- was inserted).
CREATE TABLE task_events.prune_horizon (
  taken_at       timestamptz NOT NULL DEFAULT now(),
  oldest_running xid8        NOT NULL
);

CREATE INDEX prune_horizon_taken_at_idx ON task_events.prune_horizon (taken_at);
