-- The workspace a task runs in (issue 12, `submit --workspace`): '' = none. The
-- workspace is the task's tenant's (workspaces.owner = tasks.tenant).
ALTER TABLE tasks ADD COLUMN workspace TEXT NOT NULL DEFAULT '';
