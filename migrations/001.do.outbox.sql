-- The outbox: one row per task event, written by the capture triggers in the writing transaction.
-- The listener reads it by snapshot (see lib/listener.ts), so `xid` is the column catch-up reads use.
CREATE SCHEMA IF NOT EXISTS task_events;

CREATE TABLE task_events.outbox (
  id              bigserial   PRIMARY KEY,
  environment_id  bigint      NOT NULL,
  task_id         bigint      NOT NULL,
  -- nullable on purpose: a host row without a class must never make the host's write fail
  object_class_id bigint,
  event           text        NOT NULL CHECK (event IN (
                    'task_created', 'task_value_changed', 'task_status_changed',
                    'task_owner_added', 'task_owner_removed',
                    'task_assignee_added', 'task_assignee_removed', 'task_deleted')),
  -- clock_timestamp(), not now(): events of one transaction keep their own microseconds
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- the writing transaction: a reader knows from its snapshot which rows are new to it
  xid             xid8        NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX outbox_xid_idx ON task_events.outbox (xid);
CREATE INDEX outbox_created_at_idx ON task_events.outbox (created_at);
