-- The write path made cheap (issue 4): what a host's single-row write pays for its event.
--
-- Measured with pgbench (single-row status UPDATEs, 8 writers; bench/write-path.ts), the costs
-- were, in order: NOTIFY (it takes a database-wide lock at commit, so every notifying transaction
-- commits alone), EXECUTE format() (the capture SQL was parsed and planned on every statement),
-- the outbox's CHECK constraint (its expression is set up again for every INSERT statement: about
-- as much CPU as the rest of the INSERT), and two indexes nobody reads on a hot path.
--
-- 1. The doorbell. Writers NOTIFY only when they take the first value of the sequence
--    task_events.doorbell; the listener re-arms it (setval) before a read when no other
--    transaction holds the outbox. So at most one transaction per read notifies, and under a
--    steady write load none: the listener reads again soon while others hold the outbox (they
--    will commit events it has not seen), so a writer that did not ring is still read soon after
--    its commit; see lib/listener.ts.
-- 2. attach() writes capture functions for each attached table, with the table's names in plain
--    (statically planned) SQL: no EXECUTE on any write.
-- 3. The outbox keeps one index (xid, which the listener reads by); `event` is checked where it is
--    written (the generated functions write constants; emit() checks its argument).

DROP INDEX task_events.outbox_created_at_idx;
ALTER TABLE task_events.outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE task_events.outbox DROP CONSTRAINT outbox_event_check;

CREATE SEQUENCE task_events.doorbell;

-- The listener's half: arm the doorbell (the next writer to take its first value notifies). As the
-- owner, so the plugin's role needs no rights on the sequence.
CREATE FUNCTION task_events.arm_doorbell() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM setval('task_events.doorbell', 1, false);
END
$$;

-- Whether a writer took the doorbell since it was last armed (as the owner, like arm_doorbell).
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
-- will read again soon; the doorbell is left as it is, so under a steady load nobody notifies);
-- otherwise arms the doorbell and looks again — arm, look, then the read's snapshot, in this
-- order (see lib/listener.ts).
CREATE FUNCTION task_events.before_read() RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF task_events.others_writing() THEN RETURN true; END IF;
  PERFORM task_events.arm_doorbell();
  RETURN task_events.others_writing();
END
$$;

-- The one way to record an event by hand (from a host's own trigger or function).
CREATE OR REPLACE FUNCTION task_events.emit(environment_id bigint, task_id bigint, object_class_id bigint, event text)
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

-- TRUNCATE stays generic (rare, and its EXECUTE is nothing next to the TRUNCATE itself).
CREATE OR REPLACE FUNCTION task_events.capture_task_rows()
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
  IF written > 0 AND nextval('task_events.doorbell') = 1 THEN PERFORM pg_notify('task_events', ''); END IF;
  RETURN NULL;
END
$$;

-- The name of a generated capture function: its kind and a hash of the table it serves.
CREATE FUNCTION task_events.capture_name(kind text, target regclass) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'capture_' || kind || '_' || left(md5(target::text), 12) $$;

-- Creates (or replaces) one generated capture function and comments it with its table.
-- `settings`: its SET clauses (see attach()).
CREATE FUNCTION task_events.create_capture(kind text, target regclass, body text, settings text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  name text := task_events.capture_name(kind, target);
BEGIN
  EXECUTE format('CREATE OR REPLACE FUNCTION task_events.%I() RETURNS trigger LANGUAGE plpgsql
                  SECURITY DEFINER %s AS %L', name, settings, body);
  EXECUTE format('COMMENT ON FUNCTION task_events.%I() IS %L', name,
                 format('task_events: %s capture for %s, written by task_events.attach()', kind, target));
  EXECUTE format('REVOKE EXECUTE ON FUNCTION task_events.%I() FROM PUBLIC', name);
  RETURN name;
END
$$;

-- Rings the doorbell: the first writer after the listener's last read notifies.
CREATE FUNCTION task_events.ring_sql() RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT $r$IF pg_catalog.nextval('task_events.doorbell') OPERATOR(pg_catalog.=) 1 THEN
    PERFORM pg_catalog.pg_notify('task_events', ''); END IF;$r$ $$;

CREATE OR REPLACE FUNCTION task_events.detach(
  tasks text DEFAULT 'public.tasks',
  task_owners text DEFAULT 'public.task_owners',
  task_assignees text DEFAULT 'public.task_assignees'
) RETURNS void LANGUAGE plpgsql
-- DROP ... IF EXISTS would otherwise print a notice per missing object
SET client_min_messages = warning AS $$
DECLARE
  target text;
  kind text;
BEGIN
  FOREACH target IN ARRAY array_remove(ARRAY[tasks, task_owners, task_assignees], NULL) LOOP
    FOREACH kind IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
      EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'task_events_' || kind, target::regclass);
      EXECUTE format('DROP FUNCTION IF EXISTS task_events.%I()', task_events.capture_name(kind, target::regclass));
    END LOOP;
  END LOOP;
END
$$;

-- Attaches the capture triggers to a host's own tables: "apply the migrations, call attach".
-- The defaults are the reference schema's names; a NULL owners or assignees table is skipped,
-- and a NULL status column means the table has no status. Calling it again re-attaches: do so
-- after renaming or dropping a column it names (an ignored column included). Columns added
-- later need nothing: a value change is a change of any column but the status and the ignored.
CREATE OR REPLACE FUNCTION task_events.attach(
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
  -- schema-qualified: the generated functions run with search_path = pg_catalog, pg_temp
  tasks_qualified text := (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tasks_table);
  link_table regclass;
  link record;
  kind text;
  name text;
  event text;
  -- the outbox columns from a row r of the tasks table
  task_values text := format('r.%I, r.%I, r.%I', environment_column, id_column, object_class_column);
  insert_into text := 'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event) ';
  -- the columns whose change is no value change, as they exist in the table now
  masked text[];
  row_values text := format('NEW.%I, NEW.%I, NEW.%I', environment_column, id_column, object_class_column);
  update_body text;
  statement_settings text;
BEGIN
  PERFORM task_events.require_columns(tasks_table,
    array_remove(ARRAY[id_column, environment_column, object_class_column, status_column], NULL));
  PERFORM task_events.detach(tasks, task_owners, task_assignees);

  -- INSERT and DELETE: one INSERT ... SELECT per statement, from its transition table.
  -- jit = off: a plan is cached per session; one made for a huge first statement must not make
  -- every later small one compile. A fixed search_path, as every SECURITY DEFINER function needs
  -- (the UPDATE function below does without, for speed, by naming every schema itself).
  statement_settings := 'SET search_path = pg_catalog, pg_temp SET jit = off';
  FOREACH kind IN ARRAY ARRAY['insert', 'delete'] LOOP
    name := task_events.create_capture(kind, tasks_table, format(
      'BEGIN %s SELECT %s, %L FROM %s r ORDER BY r.%I; IF FOUND THEN %s END IF; RETURN NULL; END',
      insert_into, task_values, CASE kind WHEN 'insert' THEN 'task_created' ELSE 'task_deleted' END,
      CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END, id_column, task_events.ring_sql()), statement_settings);
    EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s TABLE AS %I FOR EACH STATEMENT
                    EXECUTE FUNCTION task_events.%I()', 'task_events_' || kind, upper(kind), tasks_table,
                   CASE kind WHEN 'insert' THEN 'NEW' ELSE 'OLD' END,
                   CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END, name);
  END LOOP;

  -- UPDATE: a row trigger, the cheapest for the single-row writes most apps make (and close to a
  -- statement trigger for bulk ones). Status first; then the row with the status and the ignored
  -- columns taken from NEW is compared with NEW byte for byte (*=, which needs no equality
  -- operator, so any column type works, and columns added later count).
  -- No SET clause: a SET search_path costs a third of this function's time. Instead nothing in it
  -- is looked up by search_path: every function, operator and type is named with its schema,
  -- and comparisons use OPERATOR(pg_catalog.*=) on records (IS DISTINCT FROM would look up "=").
  SELECT array_agg(a.attname ORDER BY a.attnum) INTO masked FROM pg_attribute a
  WHERE a.attrelid = tasks_table AND a.attnum > 0 AND NOT a.attisdropped
    AND a.attname = ANY (array_append(coalesce(ignored_columns, '{}'), status_column));
  update_body := 'DECLARE rest record; BEGIN ';
  IF status_column IS NOT NULL THEN
    update_body := update_body || format(
      'IF NOT (ROW(OLD.%1$I)::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(NEW.%1$I)::pg_catalog.record) THEN
         %2$s VALUES (%3$s, %4$L); %5$s END IF; ',
      status_column, insert_into, row_values, 'task_status_changed', task_events.ring_sql());
  END IF;
  update_body := update_body || 'rest := OLD; '
    || coalesce((SELECT string_agg(format('rest.%1$I := NEW.%1$I; ', m), '') FROM unnest(masked) AS m), '')
    || format('IF NOT (rest OPERATOR(pg_catalog.*=) NEW) THEN %s VALUES (%s, %L); %s END IF; RETURN NULL; END',
              insert_into, row_values, 'task_value_changed', task_events.ring_sql());
  name := task_events.create_capture('update', tasks_table, update_body, '');
  EXECUTE format('CREATE TRIGGER task_events_update AFTER UPDATE ON %s FOR EACH ROW
                  EXECUTE FUNCTION task_events.%I()', tasks_table, name);

  -- TRUNCATE: the generic function reads the rows still in the table.
  EXECUTE format('CREATE TRIGGER task_events_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT
                  EXECUTE FUNCTION task_events.capture_task_rows(%L, %L, %L)',
                 tasks_table, id_column, environment_column, object_class_column);

  -- Owners and assignees: the join to the tasks table finds the task's environment and class;
  -- it also drops the rows a task delete cascades to (their task is already gone, and its
  -- task_deleted event says all there is to say).
  FOR link IN SELECT * FROM (VALUES (task_owners, 'owner'), (task_assignees, 'assignee')) AS l(tbl, role)
              WHERE l.tbl IS NOT NULL LOOP
    link_table := link.tbl::regclass;
    PERFORM task_events.require_columns(link_table, ARRAY[task_id_column]);
    FOREACH kind IN ARRAY ARRAY['insert', 'delete'] LOOP
      event := format('task_%s_%s', link.role, CASE kind WHEN 'insert' THEN 'added' ELSE 'removed' END);
      name := task_events.create_capture(kind, link_table, format(
        'BEGIN %s SELECT %s, %L FROM %s l JOIN %s r ON r.%I OPERATOR(pg_catalog.=) l.%I ORDER BY l.%I; IF FOUND THEN %s END IF; RETURN NULL; END',
        insert_into, task_values, event, CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END,
        tasks_qualified, id_column, task_id_column, task_id_column, task_events.ring_sql()), statement_settings);
      EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s TABLE AS %I FOR EACH STATEMENT
                      EXECUTE FUNCTION task_events.%I()', 'task_events_' || kind, upper(kind), link_table,
                     CASE kind WHEN 'insert' THEN 'NEW' ELSE 'OLD' END,
                     CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END, name);
    END LOOP;
  END LOOP;
END
$$;

-- Tables attached by an earlier version (generic functions, EXECUTE per statement) are attached
-- again with the same names, so they get the generated functions; then the generic ones go.
DO $$
DECLARE
  attached record;
BEGIN
  FOR attached IN
    WITH legacy AS (
      SELECT t.tgrelid, p.proname, string_to_array(encode(t.tgargs, 'escape'), '\000') AS args
      FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
      WHERE p.pronamespace = 'task_events'::regnamespace AND p.proname IN ('capture_task_update', 'capture_link_change')
    ), links AS (
      SELECT l.tgrelid::regclass::text AS link_table, l.args[1] AS task_id_column, l.args[2] AS event,
             format('%I.%I', l.args[3], l.args[4])::regclass AS tasks
      FROM legacy l WHERE l.proname = 'capture_link_change'
    )
    SELECT t.tgrelid::regclass::text AS tasks, t.args[1] AS id_column, t.args[2] AS environment_column,
           t.args[3] AS object_class_column, nullif(t.args[4], '') AS status_column,
           t.args[5:array_length(t.args, 1) - 1] AS ignored_columns,
           (SELECT k.link_table FROM links k WHERE k.tasks = t.tgrelid AND k.event = 'task_owner_added') AS task_owners,
           (SELECT k.link_table FROM links k WHERE k.tasks = t.tgrelid AND k.event = 'task_assignee_added') AS task_assignees,
           (SELECT k.task_id_column FROM links k WHERE k.tasks = t.tgrelid LIMIT 1) AS task_id_column
    FROM legacy t WHERE t.proname = 'capture_task_update'
  LOOP
    PERFORM task_events.attach(attached.tasks, attached.task_owners, attached.task_assignees,
      attached.id_column, attached.environment_column, attached.object_class_column,
      attached.status_column, attached.ignored_columns, coalesce(attached.task_id_column, 'task_id'));
  END LOOP;
END
$$;

DROP FUNCTION task_events.capture_task_update(), task_events.capture_link_change();
REVOKE EXECUTE ON FUNCTION task_events.create_capture(text, regclass, text, text) FROM PUBLIC;
