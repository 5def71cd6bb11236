-- The outbox: one row per task event, written by the capture functions (004) in the writing
-- transaction, and the doorbell that wakes the plugin's listener. The SQL that reads the outbox
-- is lib/outbox.ts; when it reads, lib/listener.ts.
CREATE SCHEMA IF NOT EXISTS task_events;

-- No primary key and no CHECK: each costs a writer time on every INSERT and nobody reads by them
-- (the listener reads by xid; `event` is checked where it is written: the generated capture
-- functions write constants, emit() checks its argument).
CREATE TABLE task_events.outbox (
  id              bigserial   NOT NULL,
  environment_id  bigint      NOT NULL,
  task_id         bigint      NOT NULL,
  -- nullable on purpose: a host row without a class must never make the host's write fail
  object_class_id bigint,
  event           text        NOT NULL,
  -- clock_timestamp(), not now(): events of one transaction keep their own microseconds
  created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- the writing transaction: a reader knows from its snapshot which rows are new to it
  xid             xid8        NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX outbox_xid_idx ON task_events.outbox (xid);

-- The doorbell. NOTIFY takes a database-wide lock at commit (every notifying transaction commits
-- alone), so writers notify only when they take the first value of this sequence; the listener
-- re-arms it before a read when no other transaction holds the outbox. At most one transaction
-- per read notifies, and under a steady write load none: the listener then reads again soon
-- because others hold the outbox.
CREATE SEQUENCE task_events.doorbell;

-- The listener's half: arm the doorbell (the next writer to take its first value notifies).
CREATE FUNCTION task_events.arm_doorbell() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM setval('task_events.doorbell', 1, false);
END
$$;

-- Whether a writer took the doorbell since it was last armed (its NOTIFY may be late: the ringer
-- is still open, or rolled back).
CREATE FUNCTION task_events.doorbell_taken() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT is_called FROM task_events.doorbell
$$;

-- Whether other transactions hold the outbox (they have written events and not committed yet).
CREATE FUNCTION task_events.others_writing() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (
    SELECT FROM pg_locks
    WHERE locktype = 'relation' AND relation = 'task_events.outbox'::regclass
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid())
$$;

-- What the listener does before each read, in one round trip: true when others are writing (it
-- reads again soon, and leaves the doorbell as it is); otherwise arms the doorbell and looks
-- again. Arm, look, then the read's snapshot, in this order: a writer the snapshot misses either
-- held the outbox when it looked, or wrote after the arm and so rang (lib/outbox.ts).
-- As the owner, so the plugin's role needs EXECUTE on this function and nothing on the sequence.
CREATE FUNCTION task_events.before_read() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF task_events.others_writing() THEN RETURN true; END IF;
  PERFORM task_events.arm_doorbell();
  RETURN task_events.others_writing();
END
$$;

REVOKE EXECUTE ON FUNCTION task_events.arm_doorbell(), task_events.doorbell_taken(),
  task_events.others_writing(), task_events.before_read() FROM PUBLIC;

-- The one way to record an event by hand (from a host's own trigger or function).
CREATE FUNCTION task_events.emit(environment_id bigint, task_id bigint, object_class_id bigint, event text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF emit.event IS NULL OR emit.event NOT IN (
      'task_created', 'task_value_changed', 'task_status_changed', 'task_owner_added', 'task_owner_removed',
      'task_assignee_added', 'task_assignee_removed', 'task_deleted') THEN
    RAISE EXCEPTION 'task_events.emit: unknown event %', coalesce(quote_literal(emit.event), 'NULL')
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
  VALUES (emit.environment_id, emit.task_id, emit.object_class_id, emit.event);
  IF nextval('task_events.doorbell') = 1 THEN PERFORM pg_notify('task_events', ''); END IF;
END
$$;
