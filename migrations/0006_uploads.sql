-- Push upload sessions, so a chunked push can resume after a restart. The
-- bytes live in uploads/<id>; `size` is what the last acknowledged PATCH
-- reached (the file may hold more if the process died mid-chunk).
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    touched_at INTEGER NOT NULL
);
