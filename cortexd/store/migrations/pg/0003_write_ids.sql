-- Write ids (issue 4): every transition and output append carries the UUID its writer
-- made once, so a write retried after an unknown commit outcome (the connection died at
-- COMMIT) finds its own committed row instead of being refused as stale or applied
-- twice. Transitions also record the node the task was bound to (the history checker's
-- per-node epoch check).
--
-- The functions gain a p_write argument as new overloads; the 0001 ones stay, so a hub
-- of the previous release keeps working against this schema. Only a write that would be
-- refused (or dropped as a duplicate) looks its id up, through transitions_task or the
-- output primary key, so the accepted path costs nothing more.
ALTER TABLE transitions ADD COLUMN write_id uuid, ADD COLUMN node_id text NOT NULL DEFAULT '';
ALTER TABLE output ADD COLUMN write_id uuid;

-- As 0001's, plus: a refused write whose id is already recorded is a retry of a write
-- that committed (accepted or refused): answer as the first try did, record nothing.
-- Returns NULL for an unknown task, else {"accepted": bool, "task": the row now,
-- "replayed": bool}.
CREATE FUNCTION cortex_transition(
    p_task text, p_attempt integer, p_epoch bigint, p_to text, p_from text[],
    p_terminal boolean, p_new_attempt boolean, p_node text, p_new_epoch bigint,
    p_exit integer, p_reason text, p_now bigint, p_write uuid) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_cur tasks%ROWTYPE;
    v_from text;
    v_attempt integer;
    v_node text;
    v_epoch bigint;
    v_seen boolean;
    v_left text;
BEGIN
    SELECT * INTO v_cur FROM tasks WHERE task_id = p_task FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_cur.attempt <> p_attempt OR v_cur.node_epoch <> p_epoch
            OR NOT (v_cur.state = ANY (p_from)) THEN
        IF p_write IS NOT NULL THEN
            SELECT accepted INTO v_seen FROM transitions
            WHERE task_id = p_task AND write_id = p_write;
            IF FOUND THEN
                RETURN jsonb_build_object('accepted', v_seen, 'task', to_jsonb(v_cur),
                                          'replayed', true);
            END IF;
        END IF;
        INSERT INTO transitions (task_id, attempt, from_state, to_state, node_epoch, accepted,
                                 at_ms, reason, write_id, node_id)
        VALUES (p_task, p_attempt, v_cur.state, p_to, p_epoch, false, p_now,
                format('stale: task is %s attempt %s epoch %s', v_cur.state, v_cur.attempt,
                       v_cur.node_epoch), p_write, coalesce(p_node, ''));
        RETURN jsonb_build_object('accepted', false, 'task', to_jsonb(v_cur), 'replayed', false);
    END IF;
    v_from := v_cur.state;
    v_left := v_cur.node_id;
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
                             at_ms, reason, write_id, node_id)
    VALUES (p_task, v_attempt, v_from, p_to, v_epoch, true, p_now, p_reason, p_write,
            CASE WHEN p_to = 'QUEUED' THEN v_left ELSE v_node END);
    RETURN jsonb_build_object('accepted', true, 'task', to_jsonb(v_cur), 'replayed', false);
END
$$;

-- As 0001's, plus: a write that would be dropped (duplicate) or refused (stale) but
-- whose id is on a stored chunk is a retry of an append that committed: return what
-- that append returned, ARRAY[its offset, its end].
CREATE FUNCTION cortex_append_output(
    p_task text, p_attempt integer, p_epoch bigint, p_off bigint, p_data bytea,
    p_now bigint, p_write uuid) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_end bigint;
    v_chunk bytea;
    v_new bigint;
    v_mine bigint[];
    v_stale boolean;
BEGIN
    SELECT output_bytes INTO v_end FROM tasks
    WHERE task_id = p_task AND attempt = p_attempt AND node_epoch = p_epoch FOR UPDATE;
    v_stale := NOT FOUND;
    IF v_stale OR p_off + length(p_data) <= v_end THEN
        IF p_write IS NOT NULL THEN
            SELECT ARRAY[off, off + length(data)] INTO v_mine FROM output
            WHERE task_id = p_task AND attempt = p_attempt AND write_id = p_write;
            IF v_mine IS NOT NULL THEN
                RETURN v_mine;
            END IF;
        END IF;
        IF v_stale THEN
            RETURN NULL;
        END IF;
        RETURN ARRAY[v_end, v_end];
    END IF;
    IF p_off > v_end THEN
        RETURN ARRAY[v_end, v_end];
    END IF;
    v_chunk := substring(p_data FROM (v_end - p_off + 1)::integer);
    v_new := v_end + length(v_chunk);
    INSERT INTO output (task_id, attempt, off, data, write_id)
    VALUES (p_task, p_attempt, v_end, v_chunk, p_write);
    UPDATE tasks SET output_bytes = v_new, updated_ms = p_now WHERE task_id = p_task;
    UPDATE attempts SET output_bytes = v_new WHERE task_id = p_task AND attempt = p_attempt;
    RETURN ARRAY[v_end, v_new];
END
$$;
