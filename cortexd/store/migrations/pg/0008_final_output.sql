-- A finished task's output is final (issue 9): an append for a task in a terminal state
-- is refused, and recorded in transitions (accepted = false, from = to = its state),
-- unless it is the retry of an append that committed before the end.
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
