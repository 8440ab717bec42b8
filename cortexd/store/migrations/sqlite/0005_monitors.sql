-- Monitors (issue 10, DESIGN.md §6): policies by name, the agent layer's view of a task
-- (its monitor, goal, session, parent), every decision, agent sessions. Every table has
-- an owner (the tenant) column.
CREATE TABLE policies (
    owner TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, name));
CREATE TABLE agent_tasks (
    task_id TEXT PRIMARY KEY, owner TEXT NOT NULL, policy_name TEXT NOT NULL,
    policy_body TEXT NOT NULL, goal TEXT NOT NULL, session_id TEXT NOT NULL,
    parent_task_id TEXT NOT NULL, cause TEXT NOT NULL, monitor_state TEXT NOT NULL,
    attention TEXT NOT NULL, verdict TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE INDEX agent_tasks_open ON agent_tasks (monitor_state);
CREATE INDEX agent_tasks_parent ON agent_tasks (parent_task_id);
CREATE INDEX agent_tasks_session ON agent_tasks (session_id);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, wake TEXT NOT NULL, trigger_key TEXT NOT NULL,
    rule_id TEXT NOT NULL, model TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL,
    latency_ms REAL NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, context_digest TEXT NOT NULL,
    context_bytes INTEGER NOT NULL, note TEXT NOT NULL, session_id TEXT NOT NULL,
    applied INTEGER NOT NULL, result TEXT NOT NULL, at_ms INTEGER NOT NULL,
    UNIQUE (task_id, attempt, trigger_key));
CREATE INDEX decisions_session ON decisions (session_id);
CREATE TABLE agent_sessions (
    session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, goal TEXT NOT NULL,
    root_task_id TEXT NOT NULL, created_ms INTEGER NOT NULL);
