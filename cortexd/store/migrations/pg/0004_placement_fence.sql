-- Placement is fenced by the node's session (issue 4): QUEUED -> ASSIGNED onto a node
-- is accepted only with the node's current session epoch, read under FOR SHARE, so a
-- hub that has not yet heard that the node re-attached elsewhere (a newer epoch) cannot
-- bind a task to the dead session, where no reconciliation would ever find it. The
-- refusal is recorded like any other. The function is 0003's with that one check.
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
