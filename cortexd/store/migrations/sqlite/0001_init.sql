-- The embedded store's first schema (the one SQLite stores had before versioned
-- migrations, when meta.schema_version was 1).
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('epoch', 0);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, session_epoch INTEGER NOT NULL, labels TEXT NOT NULL,
    capacity INTEGER NOT NULL, agent_version TEXT NOT NULL, shard INTEGER NOT NULL,
    attached INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, command TEXT NOT NULL, state TEXT NOT NULL,
    attempt INTEGER NOT NULL, node_id TEXT NOT NULL, node_epoch INTEGER NOT NULL,
    env TEXT NOT NULL, cwd TEXT NOT NULL, timeout_s INTEGER NOT NULL, selector TEXT NOT NULL,
    node_pin TEXT NOT NULL, idempotency_key TEXT, tenant TEXT NOT NULL, exit_code INTEGER,
    reason TEXT NOT NULL, output_bytes INTEGER NOT NULL, cancel_requested INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, created_ms);
CREATE INDEX IF NOT EXISTS tasks_node ON tasks (node_id, state);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, node_id TEXT NOT NULL,
    node_epoch INTEGER NOT NULL, state TEXT NOT NULL, exit_code INTEGER,
    output_bytes INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL,
    finished_ms INTEGER, PRIMARY KEY (task_id, attempt));
CREATE TABLE IF NOT EXISTS output (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, off INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (task_id, attempt, off));
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    from_state TEXT NOT NULL, to_state TEXT NOT NULL, node_epoch INTEGER NOT NULL,
    accepted INTEGER NOT NULL, at_ms INTEGER NOT NULL, reason TEXT NOT NULL);
