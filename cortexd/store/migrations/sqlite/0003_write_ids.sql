-- Write ids (issue 4): every transition and output append carries the UUID its writer
-- made once, so a write retried after an unknown commit outcome finds its own row
-- instead of being refused as stale or applied twice. Transitions also say which node
-- the task was bound to (the history checker's per-node epoch check). The index serves
-- the per-task history and the write id look-up.
ALTER TABLE transitions ADD COLUMN write_id TEXT;
ALTER TABLE transitions ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE output ADD COLUMN write_id TEXT;
CREATE INDEX IF NOT EXISTS transitions_task ON transitions (task_id, id);
