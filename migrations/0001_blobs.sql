-- Content-addressed files shared by every protocol. A row exists only after the
-- file is complete, verified, fsynced and renamed into blobs/: the index never
-- points at a partial file.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY NOT NULL,  -- "sha256:<hex>"
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,           -- unix seconds
    accessed_at INTEGER NOT NULL,           -- unix seconds; LRU eviction order
    hosted      INTEGER NOT NULL DEFAULT 0  -- pushed content: never evicted
) STRICT;

CREATE INDEX blobs_by_access ON blobs (hosted, accessed_at);
