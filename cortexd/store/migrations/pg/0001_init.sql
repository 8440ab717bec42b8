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
CREATE FUNCTION cortex_transition(
    p_task text, p_attempt integer, p_epoch bigint, p_to text, p_from text[],
    p_terminal boolean, p_new_attempt boolean, p_node text, p_new_epoch bigint,
    p_exit integer, p_reason text, p_now bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_cur tasks%ROWTYPE;
    v_from text;
    v_attempt integer;
    v_node text;
    v_epoch bigint;
BEGIN
    SELECT * INTO v_cur FROM tasks WHERE task_id = p_task FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_cur.attempt <> p_attempt OR v_cur.node_epoch <> p_epoch
            OR NOT (v_cur.state = ANY (p_from)) THEN
        INSERT INTO transitions (task_id, attempt, from_state, to_state, node_epoch, accepted,
                                 at_ms, reason)
        VALUES (p_task, p_attempt, v_cur.state, p_to, p_epoch, false, p_now,
                format('stale: task is %s attempt %s epoch %s', v_cur.state, v_cur.attempt,
                       v_cur.node_epoch));
        RETURN jsonb_build_object('accepted', false, 'task', to_jsonb(v_cur));
    END IF;
    v_from := v_cur.state;
    v_attempt := CASE WHEN p_new_attempt THEN p_attempt + 1 ELSE p_attempt END;
    v_node := coalesce(p_node, v_cur.node_id);
    v_epoch := coalesce(p_new_epoch, p_epoch);
    IF p_to = 'QUEUED' THEN
        v_node := '';
        v_epoch := 0;
    END IF;
    UPDATE tasks SET state = p_to, attempt = v_attempt, node_id = v_node, node_epoch = v_epoch,
        exit_code = p_exit, reason = p_reason,
        output_bytes = CASE WHEN p_new_attempt THEN 0 ELSE output_bytes END, updated_ms = p_now
    WHERE task_id = p_task RETURNING * INTO v_cur;
    IF p_new_attempt THEN
        INSERT INTO attempts (task_id, attempt, node_id, node_epoch, state, started_ms)
        VALUES (p_task, v_attempt, v_node, v_epoch, p_to, p_now);
    ELSIF p_attempt > 0 THEN
        UPDATE attempts SET state = p_to, exit_code = p_exit, node_epoch = v_epoch,
            finished_ms = CASE WHEN p_terminal THEN p_now END
        WHERE task_id = p_task AND attempt = p_attempt;
    END IF;
    INSERT INTO transitions (task_id, attempt, from_state, to_state, node_epoch, accepted,
                             at_ms, reason)
    VALUES (p_task, v_attempt, v_from, p_to, v_epoch, true, p_now, p_reason);
    RETURN jsonb_build_object('accepted', true, 'task', to_jsonb(v_cur));
END
$$;

-- Append output at the durable end of (task, attempt) if written under the task's
-- current epoch. Returns NULL when stale, else ARRAY[end before, end after]: bytes below
-- the end (a replay) are dropped, a chunk starting past the end (a gap) is refused.
CREATE FUNCTION cortex_append_output(
    p_task text, p_attempt integer, p_epoch bigint, p_off bigint, p_data bytea,
    p_now bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_end bigint;
    v_chunk bytea;
    v_new bigint;
BEGIN
    SELECT output_bytes INTO v_end FROM tasks
    WHERE task_id = p_task AND attempt = p_attempt AND node_epoch = p_epoch FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_off > v_end OR p_off + length(p_data) <= v_end THEN
        RETURN ARRAY[v_end, v_end];
    END IF;
    v_chunk := substring(p_data FROM (v_end - p_off + 1)::integer);
    v_new := v_end + length(v_chunk);
    INSERT INTO output (task_id, attempt, off, data) VALUES (p_task, p_attempt, v_end, v_chunk);
    UPDATE tasks SET output_bytes = v_new, updated_ms = p_now WHERE task_id = p_task;
    UPDATE attempts SET output_bytes = v_new WHERE task_id = p_task AND attempt = p_attempt;
    RETURN ARRAY[v_end, v_new];
END
$$;
