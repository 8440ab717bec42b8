-- Artifacts (issue 12): who owns which blob, and what references it. The blobs
-- themselves are files in the hub's artifact directory (cortexd/artifacts/localstore.py).
CREATE TABLE artifacts (
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, sha256)
);
CREATE INDEX artifacts_by_sha ON artifacts (sha256);
CREATE TABLE artifact_refs (
    owner TEXT NOT NULL,
    ref TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, ref)
);
CREATE INDEX artifact_refs_by_sha ON artifact_refs (owner, sha256);
