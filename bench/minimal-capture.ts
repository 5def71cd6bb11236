// The floor of trigger capture, as a reference for the write-path and bulk benches (issue 14): one
// plpgsql row trigger inserting one outbox row per UPDATE, no status or value check, no doorbell.
// What any trigger that records a change in the writing transaction must at least cost.
import type pg from 'pg';

const INSTALL = `
CREATE OR REPLACE FUNCTION public.bench_minimal_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_events.outbox (environment_id, task_id, object_class_id, event)
  VALUES (NEW.environment_id, NEW.id, NEW.object_class_id, 'task_status_changed');
  RETURN NULL;
END $$;
CREATE TRIGGER bench_minimal_capture AFTER UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION bench_minimal_capture()`;

/** The capture a bench round runs with: none, the minimal trigger, or ours (task_events.attach()). */
export type Capture = 'none' | 'minimal' | 'ours';

/** Puts `capture` on the reference schema's tasks table, and only it. */
export async function useCapture(pool: pg.Pool, capture: Capture): Promise<void> {
  await pool.query('SELECT task_events.detach()');
  await pool.query('DROP TRIGGER IF EXISTS bench_minimal_capture ON tasks');
  if (capture === 'minimal') await pool.query(INSTALL);
  if (capture === 'ours') await pool.query('SELECT task_events.attach()');
}
