-- Workspaces (issue 12, "ghost mirror"): a hub-side tree with copies on nodes. The
-- trees themselves are directories (the hub's under STATE_DIR/workspaces); these rows
-- say which workspaces exist, where each is attached, the last state both sides had
-- at a sync per attachment (the base of the three-way merge, cortex/wsmerge.py), and
-- the conflicts found. Every table has an owner column (tenants, a later issue).
CREATE TABLE workspaces (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE workspace_attachments (
    owner TEXT NOT NULL,
    workspace TEXT NOT NULL,
    node_id TEXT NOT NULL,
    path TEXT NOT NULL,
    attached_ms INTEGER NOT NULL,
    synced_ms INTEGER NOT NULL DEFAULT 0,
    rounds INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, workspace, node_id)
);
CREATE TABLE workspace_synced (
    owner TEXT NOT NULL,
    workspace TEXT NOT NULL,
    node_id TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    mode INTEGER NOT NULL DEFAULT 0,
    link_target TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (owner, workspace, node_id, path)
);
CREATE TABLE workspace_conflicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    workspace TEXT NOT NULL,
    node_id TEXT NOT NULL,
    path TEXT NOT NULL,
    base TEXT NOT NULL DEFAULT '',
    hub TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    resolved_ms INTEGER NOT NULL DEFAULT 0,
    resolution TEXT NOT NULL DEFAULT ''
);
CREATE INDEX workspace_conflicts_open ON workspace_conflicts (owner, workspace, resolved_ms);
