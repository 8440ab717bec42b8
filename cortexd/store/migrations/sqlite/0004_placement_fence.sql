-- Placement is fenced by the node's session (issue 4): the check is in the store's code
-- (cortexd/store/sqlite.py, one writer); this version only records that a store has it.
SELECT 1;
