-- Capture: attach() writes, for each attached table, capture functions and triggers that turn
-- writes into outbox rows. Every write path counts, since the database itself records the change:
-- an ORM, psql, a bulk UPDATE, a migration.
--
-- The capture functions run as their owner (SECURITY DEFINER), so the host app's own role needs
-- no rights on schema task_events: attaching never makes a host's write fail for want of a grant.
-- EXECUTE is revoked from PUBLIC. Each is generated with the table's names in plain SQL (planned
-- once per session, not parsed per write): call attach() again after renaming or dropping a column
-- it names. Each rings the doorbell (001) when it wrote rows.

-- What is attached, with the arguments it was attached with (for detach() and `status`).
CREATE TABLE task_events.attachments (
  tasks               regclass    PRIMARY KEY,
  task_owners         regclass,
  task_assignees      regclass,
  id_column           text        NOT NULL,
  environment_column  text        NOT NULL,
  object_class_column text        NOT NULL,
  status_column       text,
  ignored_columns     text[]      NOT NULL,
  task_id_column      text        NOT NULL,
  attached_at         timestamptz NOT NULL DEFAULT now()
);

-- TRUNCATE has no transition table: its BEFORE trigger reads the rows still in the table. Generic
-- (EXECUTE), as it is rare and its EXECUTE is nothing next to the TRUNCATE itself.
CREATE FUNCTION task_events.capture_truncate()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  written bigint;
BEGIN
  EXECUTE format(
    'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
     SELECT r.%2$I, r.%1$I, r.%3$I, ''task_deleted'' FROM %4$I.%5$I r ORDER BY r.%1$I',
    TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], TG_TABLE_SCHEMA, TG_TABLE_NAME);
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written > 0 AND nextval('task_events.doorbell') = 1 THEN PERFORM pg_notify('task_events', ''); END IF;
  RETURN NULL;
END
$$;

-- The table named by argument `argument` of attach() or detach(), or an error naming that argument.
CREATE FUNCTION task_events.require_table(argument text, name text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
  found regclass := to_regclass(name);
BEGIN
  IF found IS NULL THEN
    RAISE EXCEPTION 'task_events: % => %: no such table%', argument, quote_literal(name),
      CASE WHEN argument IN ('task_owners', 'task_assignees')
           THEN format(' (pass %s => NULL if your app has none)', argument) ELSE '' END
      USING ERRCODE = 'undefined_table';
  END IF;
  RETURN found;
END
$$;

-- Fails with a message naming the argument, the table and the column when a column is missing.
CREATE FUNCTION task_events.require_columns(argument text, target regclass, columns text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  missing text;
BEGIN
  SELECT c INTO missing FROM unnest(columns) AS c
  WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = target AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
  LIMIT 1;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'task_events.attach: %: table % has no column "%"%', argument, target, missing,
      CASE argument WHEN 'status_column' THEN ' (pass status_column => NULL if it has no status)' ELSE '' END
      USING ERRCODE = 'undefined_column';
  END IF;
END
$$;

-- The name of a generated capture function: its kind and a hash of the table it serves.
CREATE FUNCTION task_events.capture_name(kind text, target regclass) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'capture_' || kind || '_' || left(md5(target::oid::text), 12) $$;

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

-- Removes our triggers and generated functions from one table (which may have been dropped: its
-- triggers went with it, its functions are found by name).
CREATE FUNCTION task_events.drop_capture(target regclass) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  kind text;
  -- the functions its triggers call (their names hold the oid the table had when attached)
  generated text[] := ARRAY(
    SELECT t.tgfoid::regprocedure::text FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE t.tgrelid = target AND t.tgname LIKE 'task\_events\_%'
      AND p.pronamespace = 'task_events'::regnamespace AND p.proname <> 'capture_truncate');
  fn text;
BEGIN
  FOREACH kind IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
    IF EXISTS (SELECT FROM pg_class WHERE oid = target) THEN
      EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'task_events_' || kind, target);
    END IF;
    IF kind <> 'truncate' THEN
      EXECUTE format('DROP FUNCTION IF EXISTS task_events.%I()', task_events.capture_name(kind, target));
    END IF;
  END LOOP;
  FOREACH fn IN ARRAY generated LOOP
    EXECUTE format('DROP FUNCTION IF EXISTS %s', fn);
  END LOOP;
END
$$;

-- Detaches a tasks table (by name) with its owners and assignees tables; with no argument, every
-- attached table. The tables and their data are untouched. Returns how many were detached.
CREATE FUNCTION task_events.detach(tasks text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  target regclass := CASE WHEN detach.tasks IS NOT NULL THEN task_events.require_table('tasks', detach.tasks) END;
  attached task_events.attachments;
  detached integer := 0;
BEGIN
  FOR attached IN SELECT * FROM task_events.attachments a WHERE target IS NULL OR a.tasks = target LOOP
    PERFORM task_events.drop_capture(t)
    FROM unnest(ARRAY[attached.tasks, attached.task_owners, attached.task_assignees]) AS t WHERE t IS NOT NULL;
    DELETE FROM task_events.attachments a WHERE a.tasks = attached.tasks;
    detached := detached + 1;
  END LOOP;
  RETURN detached;
END
$$;

-- Attaches the capture triggers to a host's own tables: "apply the migrations, call attach".
-- The defaults are the reference schema's names. A table that does not exist is an error naming
-- the argument (pass task_owners => NULL or task_assignees => NULL for a table the app does not
-- have; status_column => NULL for no status). ignored_columns: columns whose change is no event;
-- NULL (the default) means updated_at when the table has it, and each column named must exist.
-- Calling it again re-attaches: do so after renaming or dropping a column it names. Columns added
-- later need nothing: a value change is a change of any column but the status and the ignored.
CREATE FUNCTION task_events.attach(
  tasks text DEFAULT 'public.tasks',
  task_owners text DEFAULT 'public.task_owners',
  task_assignees text DEFAULT 'public.task_assignees',
  id_column text DEFAULT 'id',
  environment_column text DEFAULT 'environment_id',
  object_class_column text DEFAULT 'object_class_id',
  status_column text DEFAULT 'status',
  ignored_columns text[] DEFAULT NULL,
  task_id_column text DEFAULT 'task_id'
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  tasks_table regclass := task_events.require_table('tasks', tasks);
  owners_table regclass := CASE WHEN task_owners IS NOT NULL THEN task_events.require_table('task_owners', task_owners) END;
  assignees_table regclass := CASE WHEN task_assignees IS NOT NULL THEN task_events.require_table('task_assignees', task_assignees) END;
  -- schema-qualified: the generated functions run with search_path = pg_catalog, pg_temp
  tasks_qualified text := (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tasks_table);
  ignored text[];
  link record;
  kind text;
  name text;
  event text;
  -- the outbox columns from a row r of the tasks table
  task_values text := format('r.%I, r.%I, r.%I', environment_column, id_column, object_class_column);
  insert_into text := 'INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event) ';
  -- the columns whose change is no value change
  masked text[];
  row_values text := format('NEW.%I, NEW.%I, NEW.%I', environment_column, id_column, object_class_column);
  update_body text;
  statement_settings text;
BEGIN
  PERFORM task_events.require_columns(arg, tasks_table, ARRAY[col])
  FROM (VALUES ('id_column', id_column), ('environment_column', environment_column),
               ('object_class_column', object_class_column), ('status_column', status_column)) AS a(arg, col)
  WHERE col IS NOT NULL;
  IF ignored_columns IS NULL THEN
    ignored := ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = tasks_table
                     AND a.attname = 'updated_at' AND a.attnum > 0 AND NOT a.attisdropped);
  ELSE
    PERFORM task_events.require_columns('ignored_columns', tasks_table, ignored_columns);
    ignored := ignored_columns;
  END IF;
  FOR link IN SELECT * FROM (VALUES ('task_owners', owners_table), ('task_assignees', assignees_table)) AS l(arg, tbl)
              WHERE l.tbl IS NOT NULL LOOP
    PERFORM task_events.require_columns('task_id_column', link.tbl, ARRAY[task_id_column]);
  END LOOP;

  -- Again: what was attached to this tasks table goes first, then any trigger of ours on these tables.
  PERFORM task_events.drop_capture(t) FROM task_events.attachments a,
    unnest(ARRAY[a.tasks, a.task_owners, a.task_assignees]) AS t WHERE a.tasks = tasks_table AND t IS NOT NULL;
  DELETE FROM task_events.attachments a WHERE a.tasks = tasks_table;
  PERFORM task_events.drop_capture(t) FROM unnest(ARRAY[tasks_table, owners_table, assignees_table]) AS t WHERE t IS NOT NULL;

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
  masked := array_remove(array_append(ignored, status_column), NULL);
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

  EXECUTE format('CREATE TRIGGER task_events_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT
                  EXECUTE FUNCTION task_events.capture_truncate(%L, %L, %L)',
                 tasks_table, id_column, environment_column, object_class_column);

  -- Owners and assignees: the join to the tasks table finds the task's environment and class;
  -- it also drops the rows a task delete cascades to (their task is already gone, and its
  -- task_deleted event says all there is to say).
  FOR link IN SELECT * FROM (VALUES (owners_table, 'owner'), (assignees_table, 'assignee')) AS l(tbl, role)
              WHERE l.tbl IS NOT NULL LOOP
    FOREACH kind IN ARRAY ARRAY['insert', 'delete'] LOOP
      event := format('task_%s_%s', link.role, CASE kind WHEN 'insert' THEN 'added' ELSE 'removed' END);
      name := task_events.create_capture(kind, link.tbl, format(
        'BEGIN %s SELECT %s, %L FROM %s l JOIN %s r ON r.%I OPERATOR(pg_catalog.=) l.%I ORDER BY l.%I; IF FOUND THEN %s END IF; RETURN NULL; END',
        insert_into, task_values, event, CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END,
        tasks_qualified, id_column, task_id_column, task_id_column, task_events.ring_sql()), statement_settings);
      EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s REFERENCING %s TABLE AS %I FOR EACH STATEMENT
                      EXECUTE FUNCTION task_events.%I()', 'task_events_' || kind, upper(kind), link.tbl,
                     CASE kind WHEN 'insert' THEN 'NEW' ELSE 'OLD' END,
                     CASE kind WHEN 'insert' THEN 'new_rows' ELSE 'old_rows' END, name);
    END LOOP;
  END LOOP;

  INSERT INTO task_events.attachments (tasks, task_owners, task_assignees, id_column, environment_column,
    object_class_column, status_column, ignored_columns, task_id_column)
  VALUES (tasks_table, owners_table, assignees_table, id_column, environment_column,
    object_class_column, status_column, ignored, task_id_column);
END
$$;

REVOKE EXECUTE ON FUNCTION task_events.capture_truncate(),
  task_events.create_capture(text, regclass, text, text) FROM PUBLIC;
