-- The node tool that runs a task (issue 10, cortex/tools.py): '' is the shell.
ALTER TABLE tasks ADD COLUMN tool TEXT NOT NULL DEFAULT '';
