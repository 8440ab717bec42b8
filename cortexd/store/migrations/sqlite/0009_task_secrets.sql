-- Secrets (issue 10): what was typed at a task's password prompt, sealed (AES-GCM with
-- the host's STATE_DIR/secrets.key, never stored in the clear), so the hub still
-- replaces it by "[secret]" in every monitor's context after the control process
-- restarts.
CREATE TABLE task_secrets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, task_id TEXT NOT NULL,
    sealed BLOB NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX task_secrets_task ON task_secrets (task_id);
