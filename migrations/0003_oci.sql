-- OCI distribution: which repository holds which manifests, blobs and tags.
-- `repo` is the mirror's key for a repository: `<upstream name>/<remote name>`
-- for a mirrored one, the repository name itself for a hosted one. Content
-- lives in `blobs`; deleting a blob row drops every link to it.

CREATE TABLE oci_manifests (
    repo          TEXT NOT NULL,
    digest        TEXT NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    media_type    TEXT NOT NULL,       -- Content-Type exactly as received
    size          INTEGER NOT NULL,
    subject       TEXT,                -- the manifest's `subject` digest (referrers API)
    artifact_type TEXT,                -- artifactType, else config.mediaType (referrers API)
    annotations   TEXT,                -- JSON object, for referrer descriptors
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
) STRICT, WITHOUT ROWID;

CREATE INDEX oci_manifests_by_subject ON oci_manifests (repo, subject) WHERE subject IS NOT NULL;

CREATE TABLE oci_tags (
    repo       TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    checked_at INTEGER NOT NULL,       -- unix seconds upstream last confirmed it (or it was pushed)
    PRIMARY KEY (repo, tag),
    FOREIGN KEY (repo, digest) REFERENCES oci_manifests (repo, digest) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Blobs (layers, configs) a repository holds: what makes a hosted blob
-- visible in one repository and not another, and a mirrored one a hit.
CREATE TABLE oci_repo_blobs (
    repo   TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    PRIMARY KEY (repo, digest)
) STRICT, WITHOUT ROWID;

CREATE INDEX oci_repo_blobs_by_digest ON oci_repo_blobs (digest);
