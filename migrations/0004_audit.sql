-- Who read or wrote what: one row per content request, written in batches.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,  -- unix milliseconds
    identity  TEXT NOT NULL,     -- cert | user | anonymous
    subject   TEXT NOT NULL,     -- certificate CN or user name; '-' when anonymous
    serial    TEXT,              -- client certificate serial (hex)
    peer      TEXT NOT NULL,     -- ip:port
    protocol  TEXT NOT NULL,     -- go | oci
    action    TEXT NOT NULL,     -- read | write | delete
    artifact  TEXT NOT NULL,     -- module@version.kind, repo:tag, repo@digest
    digest    TEXT,
    outcome   TEXT NOT NULL,     -- hit | miss | stale | hosted | not_found | invalid | error
    status    INTEGER NOT NULL
) STRICT;

CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX audit_by_subject ON audit (subject, at_ms);
CREATE INDEX audit_by_digest ON audit (digest, at_ms) WHERE digest IS NOT NULL;
CREATE INDEX audit_by_artifact ON audit (artifact, at_ms);
