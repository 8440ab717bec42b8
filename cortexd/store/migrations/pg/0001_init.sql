-- The PostgreSQL store's first schema. Same tables as the SQLite store (labels, env
-- and selectors as JSON text), plus the epoch counter as a row (an UPDATE ... RETURNING
-- is a durable, WAL-flushed write; a sequence's nextval is not guaranteed to be, and a
-- fencing epoch must never repeat after a crash), and the two conditional writes as
-- functions so that each is one statement and a batch of them is one pipelined
-- round trip.
CREATE TABLE cortex_epoch (id integer PRIMARY KEY CHECK (id = 1), value bigint NOT NULL);
INSERT INTO cortex_epoch VALUES (1, 0);

CREATE TABLE nodes (
    node_id text PRIMARY KEY, session_epoch bigint NOT NULL, labels text NOT NULL,
    capacity integer NOT NULL, agent_version text NOT NULL, shard integer NOT NULL,
    attached boolean NOT NULL, last_seen_ms bigint NOT NULL);

CREATE TABLE tasks (
    task_id text PRIMARY KEY, command text NOT NULL, state text NOT NULL,
    attempt integer NOT NULL, node_id text NOT NULL, node_epoch bigint NOT NULL,
    env text NOT NULL, cwd text NOT NULL, timeout_s integer NOT NULL, selector text NOT NULL,
    node_pin text NOT NULL, idempotency_key text, tenant text NOT NULL, exit_code integer,
    reason text NOT NULL, output_bytes bigint NOT NULL, cancel_requested boolean NOT NULL,
    created_ms bigint NOT NULL, updated_ms bigint NOT NULL);
CREATE UNIQUE INDEX tasks_idem ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, created_ms);
CREATE INDEX tasks_node ON tasks (node_id, state);

CREATE TABLE attempts (
    task_id text NOT NULL, attempt integer NOT NULL, node_id text NOT NULL,
    node_epoch bigint NOT NULL, state text NOT NULL, exit_code integer,
    output_bytes bigint NOT NULL DEFAULT 0, started_ms bigint NOT NULL,
    finished_ms bigint, PRIMARY KEY (task_id, attempt));

CREATE TABLE output (
    task_id text NOT NULL, attempt integer NOT NULL, off bigint NOT NULL,
    data bytea NOT NULL, PRIMARY KEY (task_id, attempt, off));

CREATE TABLE transitions (
    id bigserial PRIMARY KEY, task_id text NOT NULL, attempt integer NOT NULL,
    from_state text NOT NULL, to_state text NOT NULL, node_epoch bigint NOT NULL,
    accepted boolean NOT NULL, at_ms bigint NOT NULL, reason text NOT NULL);
CREATE INDEX transitions_task ON transitions (task_id, id);

-- Conditional transition on (task, attempt, node epoch, expected source states). The
-- refusal is recorded and committed too. Returns NULL for an unknown task, else
-- {"accepted": bool, "task": <the row after (accepted) or as found (refused)>}.
-- (function defined in functions.sql, re-applied on every migrate)

-- Append output at the durable end of (task, attempt) if written under the task's
-- current epoch. Returns NULL when stale, else ARRAY[end before, end after]: bytes below
-- the end (a replay) are dropped, a chunk starting past the end (a gap) is refused.
-- (function defined in functions.sql, re-applied on every migrate)
