-- A finished task's output is final (issue 9): SQLite has no stored functions, so the
-- rule lives in cortexd/store/sqlite.py (_append); this version keeps both kinds in step.
SELECT 1;
