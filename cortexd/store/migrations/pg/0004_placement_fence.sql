-- Placement is fenced by the node's session (issue 4): QUEUED -> ASSIGNED onto a node
-- is accepted only with the node's current session epoch, read under FOR SHARE, so a
-- hub that has not yet heard that the node re-attached elsewhere (a newer epoch) cannot
-- bind a task to the dead session, where no reconciliation would ever find it. The
-- refusal is recorded like any other. The function is 0003's with that one check.
-- (function defined in functions.sql, re-applied on every migrate)
SELECT 1;
