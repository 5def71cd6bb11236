-- Capture: the functions that turn writes to a host's task tables into outbox rows.
--
-- Triggers are statement-level with transition tables, so a 100k-row UPDATE costs one INSERT ...
-- SELECT, not 100k trigger calls. The trigger functions are generic: table and column names come
-- from the trigger's arguments, which task_events.attach() writes. Every write path counts, since
-- the database itself records the change: an ORM, psql, a bulk UPDATE, a migration.
--
-- The capture functions run as their owner (SECURITY DEFINER, with a fixed search_path), so the
-- host app's own role needs no rights on schema task_events: attaching never makes a host's write
-- fail for want of a grant. EXECUTE is revoked from PUBLIC, so no one else can attach them.
--
-- Each function that writes outbox rows rings the doorbell: NOTIFY on channel 'task_events' with
-- an empty payload. PostgreSQL folds identical notifications of one transaction into one, and the
-- listener reads the outbox itself, so the payload carries nothing.

-- The one way to record an event by hand (from a host's own trigger or function).
CREATE FUNCTION task_events.emit(environment_id bigint, task_id bigint, object_class_id bigint, event text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
  VALUES (emit.environment_id, emit.task_id, emit.object_class_id, emit.event);
  PERFORM pg_notify('task_events', '');
END
$$;

-- Arguments of the task triggers: id column, environment column, object class column, status
-- column ('' when the table has none), then the columns whose change is no event (updated_at).

-- One event per row for INSERT (task_created) and DELETE (task_deleted), read from the statement's
-- transition table; TRUNCATE has none, so its BEFORE trigger reads the rows still in the table.
CREATE FUNCTION task_events.capture_task_rows()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  written bigint;
  source text := CASE TG_OP WHEN 'INSERT' THEN 'new_rows' WHEN 'DELETE' THEN 'old_rows'
                            ELSE format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME) END;
BEGIN
  EXECUTE format(
    'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
     SELECT r.%2$I, r.%1$I, r.%3$I, %4$L FROM %5$s r ORDER BY r.%1$I',
    TG_ARGV[0], TG_ARGV[1], TG_ARGV[2],
    CASE TG_OP WHEN 'INSERT' THEN 'task_created' ELSE 'task_deleted' END, source);
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written > 0 THEN PERFORM pg_notify('task_events', ''); END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION task_events.capture_task_update()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  written bigint;
  status_changed text := CASE WHEN TG_ARGV[3] = '' THEN 'false'
                              ELSE format('o.%1$I IS DISTINCT FROM n.%1$I', TG_ARGV[3]) END;
BEGIN
  -- A value change is a change of any column but the status and the ignored ones; comparing the
  -- rows as jsonb keeps this true when the host adds columns later. Status comes first (rank 1).
  EXECUTE format(
    'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
     SELECT n.%2$I, n.%1$I, n.%3$I, e.event
     FROM old_rows o
     JOIN new_rows n ON n.%1$I = o.%1$I
     CROSS JOIN LATERAL (VALUES
       (1, ''task_status_changed'', %4$s),
       (2, ''task_value_changed'', (to_jsonb(o) - $1) IS DISTINCT FROM (to_jsonb(n) - $1))
     ) AS e(rank, event, changed)
     WHERE e.changed
     ORDER BY n.%1$I, e.rank',
    TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], status_changed)
  USING TG_ARGV[3:]::text[];
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written > 0 THEN PERFORM pg_notify('task_events', ''); END IF;
  RETURN NULL;
END
$$;

-- Arguments of the owner/assignee triggers: the link table's task column, the event name, the
-- tasks table's schema and name, and its id, environment and object class columns. The join to the tasks table is
-- also what drops the rows a task delete cascades to: their task is already gone, and its
-- task_deleted event says all there is to say.
CREATE FUNCTION task_events.capture_link_change()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  written bigint;
BEGIN
  EXECUTE format(
    'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
     SELECT t.%6$I, t.%5$I, t.%7$I, %2$L
     FROM %8$I l JOIN %3$I.%4$I t ON t.%5$I = l.%1$I
     ORDER BY l.%1$I',
    TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], TG_ARGV[3], TG_ARGV[4], TG_ARGV[5], TG_ARGV[6],
    CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END);
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written > 0 THEN PERFORM pg_notify('task_events', ''); END IF;
  RETURN NULL;
END
$$;

-- Fails with a message naming the table and the column when a column is missing.
CREATE FUNCTION task_events.require_columns(target regclass, columns text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  missing text;
BEGIN
  SELECT c INTO missing FROM unnest(columns) AS c
  WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = target AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
  LIMIT 1;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'task_events.attach: table % has no column "%"', target, missing
      USING ERRCODE = 'undefined_column';
  END IF;
END
$$;

-- Removes our triggers from a host's tables; the tables and their data are untouched.
-- NULL skips a table.
CREATE FUNCTION task_events.detach(
  tasks text DEFAULT 'public.tasks',
  task_owners text DEFAULT 'public.task_owners',
  task_assignees text DEFAULT 'public.task_assignees'
) RETURNS void LANGUAGE plpgsql
-- DROP TRIGGER IF EXISTS would otherwise print a notice per missing trigger
SET client_min_messages = warning AS $$
DECLARE
  target text;
  trigger_name text;
BEGIN
  FOREACH target IN ARRAY array_remove(ARRAY[tasks, task_owners, task_assignees], NULL) LOOP
    FOREACH trigger_name IN ARRAY ARRAY['task_events_insert', 'task_events_update', 'task_events_delete', 'task_events_truncate'] LOOP
      EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, target::regclass);
    END LOOP;
  END LOOP;
END
$$;

-- Attaches the capture triggers to a host's own tables: "apply the migrations, call attach".
-- The defaults are the reference schema's names; a NULL owners or assignees table is skipped,
-- and a NULL status column means the table has no status. Calling it again re-attaches.
CREATE FUNCTION task_events.attach(
  tasks text DEFAULT 'public.tasks',
  task_owners text DEFAULT 'public.task_owners',
  task_assignees text DEFAULT 'public.task_assignees',
  id_column text DEFAULT 'id',
  environment_column text DEFAULT 'environment_id',
  object_class_column text DEFAULT 'object_class_id',
  status_column text DEFAULT 'status',
  ignored_columns text[] DEFAULT ARRAY['updated_at'],
  task_id_column text DEFAULT 'task_id'
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  tasks_table regclass := tasks::regclass;
  -- schema and name apart, so the link triggers find the tasks table whatever the search_path
  tasks_schema text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.oid = tasks_table);
  tasks_name text := (SELECT c.relname FROM pg_class c WHERE c.oid = tasks_table);
  link_table regclass;
  link record;
  task_args text;
  link_args text;
BEGIN
  PERFORM task_events.require_columns(tasks_table,
    array_remove(ARRAY[id_column, environment_column, object_class_column, status_column], NULL));
  PERFORM task_events.detach(tasks, task_owners, task_assignees);

  SELECT string_agg(quote_literal(a), ', ') INTO task_args
  FROM unnest(ARRAY[id_column, environment_column, object_class_column, coalesce(status_column, '')]
              || coalesce(ignored_columns, '{}')) AS a;

  EXECUTE format('CREATE TRIGGER task_events_insert AFTER INSERT ON %s
                  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                  EXECUTE FUNCTION task_events.capture_task_rows(%s)', tasks_table, task_args);
  EXECUTE format('CREATE TRIGGER task_events_update AFTER UPDATE ON %s
                  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
                  EXECUTE FUNCTION task_events.capture_task_update(%s)', tasks_table, task_args);
  EXECUTE format('CREATE TRIGGER task_events_delete AFTER DELETE ON %s
                  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                  EXECUTE FUNCTION task_events.capture_task_rows(%s)', tasks_table, task_args);
  EXECUTE format('CREATE TRIGGER task_events_truncate BEFORE TRUNCATE ON %s
                  FOR EACH STATEMENT EXECUTE FUNCTION task_events.capture_task_rows(%s)', tasks_table, task_args);

  FOR link IN SELECT * FROM (VALUES (task_owners, 'owner'), (task_assignees, 'assignee')) AS l(tbl, kind)
              WHERE l.tbl IS NOT NULL LOOP
    link_table := link.tbl::regclass;
    PERFORM task_events.require_columns(link_table, ARRAY[task_id_column]);
    link_args := format('%L, %L, %L, %L, %L, %L, %L', task_id_column, 'task_' || link.kind || '_added',
                        tasks_schema, tasks_name, id_column, environment_column, object_class_column);
    EXECUTE format('CREATE TRIGGER task_events_insert AFTER INSERT ON %s
                    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION task_events.capture_link_change(%s)', link_table, link_args);
    link_args := format('%L, %L, %L, %L, %L, %L, %L', task_id_column, 'task_' || link.kind || '_removed',
                        tasks_schema, tasks_name, id_column, environment_column, object_class_column);
    EXECUTE format('CREATE TRIGGER task_events_delete AFTER DELETE ON %s
                    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
                    EXECUTE FUNCTION task_events.capture_link_change(%s)', link_table, link_args);
  END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION
  task_events.capture_task_rows(), task_events.capture_task_update(), task_events.capture_link_change()
FROM PUBLIC;
