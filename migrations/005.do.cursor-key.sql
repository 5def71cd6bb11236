-- The key that signs protocol v2 cursors (lib/cursor.ts): one per database, so a cursor issued by
-- any instance is good on every other and after restarts, and one forged or altered is refused.
-- From gen_random_uuid() (PostgreSQL's strong random source, no extension needed): 244 random bits.
CREATE TABLE task_events.cursor_key (
  key bytea NOT NULL CHECK (octet_length(key) = 32)
);

INSERT INTO task_events.cursor_key (key)
SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');

-- One row: a second key would make cursors ambiguous.
CREATE UNIQUE INDEX cursor_key_one_row ON task_events.cursor_key ((true));
