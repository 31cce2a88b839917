-- The PostgreSQL index: the tables of ../0001..0010 as they stand after the
-- last SQLite migration, in one step, since a PostgreSQL database has no
-- history to replay. Times are unix seconds (at_ms: milliseconds), sizes and
-- flags BIGINT so every column reads back as i64 like SQLite's INTEGER.
-- Keys are compared and ordered bytewise (COLLATE "C"), as SQLite does: tag
-- and catalog pagination and the prefix range over Go answers depend on it,
-- whatever locale the database was created with.
-- Comments on what each table means are in the SQLite migrations.

CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    accessed_at BIGINT NOT NULL,
    hosted      BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX blobs_by_access ON blobs (hosted, accessed_at);

CREATE TABLE go_files (
    module     TEXT COLLATE "C" NOT NULL,
    version    TEXT COLLATE "C" NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('info', 'mod', 'zip')),
    digest     TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (module, version, kind)
);

CREATE INDEX go_files_by_digest ON go_files (digest);

CREATE TABLE go_answers (
    key        TEXT COLLATE "C" PRIMARY KEY,
    status     BIGINT NOT NULL,
    body       BYTEA NOT NULL,
    fetched_at BIGINT NOT NULL
);

CREATE TABLE go_sumdb_tiles (
    sumdb  TEXT COLLATE "C" NOT NULL,
    tile   TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    size   BIGINT NOT NULL,
    PRIMARY KEY (sumdb, tile)
);

CREATE INDEX go_sumdb_tiles_by_digest ON go_sumdb_tiles (digest);

CREATE TABLE oci_manifests (
    repo          TEXT COLLATE "C" NOT NULL,
    digest        TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL,
    subject       TEXT COLLATE "C",
    artifact_type TEXT,
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);

CREATE INDEX oci_manifests_by_subject ON oci_manifests (repo, subject) WHERE subject IS NOT NULL;

CREATE TABLE oci_tags (
    repo       TEXT COLLATE "C" NOT NULL,
    tag        TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag),
    FOREIGN KEY (repo, digest) REFERENCES oci_manifests (repo, digest) ON DELETE CASCADE
);

-- SQLite indexes a foreign key's child side implicitly through the lookups
-- it needs; PostgreSQL does not, and a manifest's delete scans for its tags.
CREATE INDEX oci_tags_by_manifest ON oci_tags (repo, digest);

CREATE TABLE oci_repo_blobs (
    repo   TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    PRIMARY KEY (repo, digest)
);

CREATE INDEX oci_repo_blobs_by_digest ON oci_repo_blobs (digest);

CREATE TABLE oci_manifest_blobs (
    repo     TEXT COLLATE "C" NOT NULL,
    manifest TEXT COLLATE "C" NOT NULL,
    digest   TEXT COLLATE "C" NOT NULL,
    size     BIGINT NOT NULL,
    PRIMARY KEY (repo, digest, manifest),
    FOREIGN KEY (repo, manifest) REFERENCES oci_manifests (repo, digest) ON DELETE CASCADE
);

CREATE INDEX oci_manifest_blobs_by_manifest ON oci_manifest_blobs (repo, manifest);

CREATE TABLE audit (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    identity  TEXT NOT NULL,
    subject   TEXT COLLATE "C" NOT NULL,
    serial    TEXT,
    peer      TEXT NOT NULL,
    protocol  TEXT NOT NULL,
    action    TEXT NOT NULL,
    artifact  TEXT NOT NULL,
    digest    TEXT COLLATE "C",
    outcome   TEXT NOT NULL,
    status    BIGINT NOT NULL,
    count     BIGINT NOT NULL DEFAULT 1
);

CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX audit_by_subject ON audit (subject, at_ms);
CREATE INDEX audit_by_digest ON audit (digest, at_ms) WHERE digest IS NOT NULL;

CREATE TABLE uploads (
    id         TEXT COLLATE "C" PRIMARY KEY,
    repo_key   TEXT NOT NULL,
    size       BIGINT NOT NULL,
    touched_at BIGINT NOT NULL,
    owner      TEXT COLLATE "C" NOT NULL DEFAULT '',
    hash_state BYTEA
);

CREATE INDEX uploads_by_owner ON uploads (owner);

CREATE TABLE generation (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);

INSERT INTO generation (id, value) VALUES (1, 0);
