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
-- (function defined in functions.sql, re-applied on every migrate)

-- As 0001's, plus: a write that would be dropped (duplicate) or refused (stale) but
-- whose id is on a stored chunk is a retry of an append that committed: return what
-- that append returned, ARRAY[its offset, its end].
-- (function defined in functions.sql, re-applied on every migrate)
