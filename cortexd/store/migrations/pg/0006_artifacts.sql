-- Artifacts (issue 12), shared by the hubs of one cluster: ownership and references
-- (as in SQLite), and the bytes as chunk rows (cortexd/artifacts/pgstore.py says why
-- rows and not large objects). An upload writes its chunks under a fresh blob_id; a
-- finished, checked upload becomes a row of artifact_blobs pointing at them.
CREATE TABLE artifacts (
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT NOT NULL,
    PRIMARY KEY (owner, sha256)
);
CREATE INDEX artifacts_by_sha ON artifacts (sha256);
CREATE TABLE artifact_refs (
    owner TEXT NOT NULL,
    ref TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, ref)
);
CREATE INDEX artifact_refs_by_sha ON artifact_refs (owner, sha256);
CREATE TABLE artifact_uploads (
    blob_id BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    committed BIGINT NOT NULL DEFAULT 0,
    updated_ms BIGINT NOT NULL,
    UNIQUE (owner, sha256)
);
CREATE TABLE artifact_blobs (
    sha256 TEXT PRIMARY KEY,
    blob_id BIGINT NOT NULL UNIQUE,
    size_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE artifact_chunks (
    blob_id BIGINT NOT NULL,
    off BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, off)
);
-- Stored out of line and uncompressed: artifacts are mostly compressed already, and a
-- read of one chunk should not decompress anything.
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
