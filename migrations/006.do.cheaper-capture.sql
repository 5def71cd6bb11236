-- 006: cheaper capture and a cheaper look before each read (issue 14). Released migrations never
-- change, so what changes is replaced here: before_read() and attach(), then every attached table
-- is attached again with the arguments it was attached with (its generated functions rewritten).

-- Before each read: whether other transactions hold the outbox, asked of the lock manager about
-- this one table. 001 read pg_locks twice, which copies every lock of the server while holding all
-- of the lock table's partitions (writers that take a lock wait meanwhile): about half of an
-- empty read's database CPU, and a stall for every writer, several times a second under load.
-- SHARE conflicts with the ROW EXCLUSIVE lock every writer of the outbox holds until it ends:
-- NOWAIT fails when one does (true: read again soon). Otherwise the doorbell is armed while the
-- lock is held, so no writer can slip in between the look and the arm: every writer the read's
-- snapshot misses wrote after the arm, and so rang. The lock lasts until before_read()'s own
-- transaction ends (lib/outbox.ts runs it in one of its own, before the read's): a writer arriving
-- meanwhile waits for microseconds.
CREATE OR REPLACE FUNCTION task_events.before_read() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  LOCK TABLE task_events.outbox IN SHARE MODE NOWAIT;
  PERFORM task_events.arm_doorbell();
  RETURN false;
EXCEPTION WHEN lock_not_available THEN
  RETURN true;
END
$$;

-- 001's look at pg_locks, which nothing calls any more.
DROP FUNCTION task_events.others_writing();

-- The condition, in a generated UPDATE capture, that a column's value changed. For the types whose
-- equality is byte equality (integers, boolean, uuid, enums; text and varchar compared under
-- COLLATE "C"), their own = operator, at less than half the cost of the record comparison
-- (ROW(OLD.c) *= ROW(NEW.c)) that stays for every other type, where a change of bytes is a
-- change (numeric 1.0 → 1.00, json). The operator is named with its schema: the generated
-- function runs without a fixed search_path.
CREATE FUNCTION task_events.changed_sql(target regclass, column_name text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
  type_name text;
  not_null boolean;
  equal text;
BEGIN
  -- a built-in type by its name, or 'enum'
  SELECT CASE WHEN t.typtype = 'e' THEN 'enum' WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname END,
         a.attnotnull
  INTO type_name, not_null
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  WHERE a.attrelid = target AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
  IF type_name IN ('enum', 'int2', 'int4', 'int8', 'bool', 'uuid', 'oid') THEN
    equal := format('OLD.%1$I OPERATOR(pg_catalog.=) NEW.%1$I', column_name);
  ELSIF type_name IN ('text', 'varchar') THEN
    equal := format('OLD.%1$I COLLATE pg_catalog."C" OPERATOR(pg_catalog.=) NEW.%1$I COLLATE pg_catalog."C"', column_name);
  ELSE
    RETURN format('NOT (ROW(OLD.%1$I)::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(NEW.%1$I)::pg_catalog.record)', column_name);
  END IF;
  IF not_null THEN RETURN format('NOT (%1$s)', equal); END IF;
  RETURN format('NOT coalesce(%1$s, OLD.%2$I IS NULL AND NEW.%2$I IS NULL)', equal, column_name);
END
$$;

CREATE OR REPLACE FUNCTION task_events.attach(
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
  -- statement trigger for bulk ones). Status first (changed_sql()); then the row with the status
  -- and the ignored columns taken from NEW is compared with NEW byte for byte (*=, which needs no
  -- equality operator, so any column type works, and columns added later count).
  -- No SET clause: a SET search_path costs a third of this function's time. Instead nothing in it
  -- is looked up by search_path: every function, operator and type is named with its schema,
  -- and comparisons use OPERATOR(pg_catalog.*=) on records (IS DISTINCT FROM would look up "=").
  masked := array_remove(array_append(ignored, status_column), NULL);
  update_body := 'DECLARE rest record; BEGIN ';
  IF status_column IS NOT NULL THEN
    update_body := update_body || format('IF %1$s THEN %2$s VALUES (%3$s, %4$L); %5$s END IF; ',
      task_events.changed_sql(tasks_table, status_column), insert_into, row_values, 'task_status_changed', task_events.ring_sql());
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

-- Every attached table again, as it was attached: its UPDATE capture now uses changed_sql().
SELECT task_events.attach(a.tasks::text, a.task_owners::text, a.task_assignees::text, a.id_column,
  a.environment_column, a.object_class_column, a.status_column, a.ignored_columns, a.task_id_column)
FROM task_events.attachments a;
