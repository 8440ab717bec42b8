-- A finished task's output is final (issue 9): an append for a task in a terminal state
-- is refused, and recorded in transitions (accepted = false, from = to = its state),
-- unless it is the retry of an append that committed before the end.
-- (function defined in functions.sql, re-applied on every migrate)
SELECT 1;
