-- The stored functions of the PostgreSQL store, defined here only (issue 9: the
-- transition rule was copied into three migrations). Re-applied at the end of every
-- migrate (cortexd/store/postgres.py), so the numbered migrations hold tables and data
-- only; a release that changes a function adds a numbered migration (a comment will
-- do), so that hubs refuse the schema until `cortexctl db migrate` re-applies this.
-- The rule itself is cortexd/lifecycle.py's ALLOWED (tests/unit/test_store.py drives
-- every pair through both backends).

CREATE OR REPLACE FUNCTION cortex_transition(
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
    v_session bigint;
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
    IF p_to = 'ASSIGNED' AND p_new_epoch IS NOT NULL AND p_node IS NOT NULL THEN
        -- Placement is fenced too: only onto the node's current session. FOR SHARE
        -- orders this against a newer attach (which updates the row).
        SELECT session_epoch INTO v_session FROM nodes WHERE node_id = p_node FOR SHARE;
        IF FOUND AND v_session <> p_new_epoch THEN
            INSERT INTO transitions (task_id, attempt, from_state, to_state, node_epoch,
                                     accepted, at_ms, reason, write_id, node_id)
            VALUES (p_task, p_attempt, v_cur.state, p_to, p_new_epoch, false, p_now,
                    format('stale: node %s is in session %s, not %s', p_node, v_session,
                           p_new_epoch), p_write, p_node);
            RETURN jsonb_build_object('accepted', false, 'task', to_jsonb(v_cur),
                                      'replayed', false);
        END IF;
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

CREATE OR REPLACE FUNCTION cortex_append_output(
    p_task text, p_attempt integer, p_epoch bigint, p_off bigint, p_data bytea,
    p_now bigint, p_write uuid) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_end bigint;
    v_state text;
    v_chunk bytea;
    v_new bigint;
    v_mine bigint[];
    v_stale boolean;
    v_ended boolean;
BEGIN
    SELECT output_bytes, state INTO v_end, v_state FROM tasks
    WHERE task_id = p_task AND attempt = p_attempt AND node_epoch = p_epoch FOR UPDATE;
    v_stale := NOT FOUND;
    v_ended := NOT v_stale AND v_state IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT',
                                            'LOST');
    IF v_stale OR v_ended OR p_off + length(p_data) <= v_end THEN
        IF p_write IS NOT NULL THEN
            SELECT ARRAY[off, off + length(data)] INTO v_mine FROM output
            WHERE task_id = p_task AND attempt = p_attempt AND write_id = p_write;
            IF v_mine IS NOT NULL THEN
                RETURN v_mine;
            END IF;
        END IF;
        IF v_ended THEN
            INSERT INTO transitions (task_id, attempt, from_state, to_state, node_epoch,
                                     accepted, at_ms, reason, write_id, node_id)
            VALUES (p_task, p_attempt, v_state, v_state, p_epoch, false, p_now,
                    'output after the end refused: ' || length(p_data) || ' bytes at offset '
                    || p_off, p_write, '');
        END IF;
        IF v_stale OR v_ended THEN
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
