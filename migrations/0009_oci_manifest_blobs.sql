-- The blobs (config, layers) each stored manifest names, with the size its
-- descriptor gives: a pull-through blob is cut off once it runs past every
-- size the repository's manifests state for it. Goes with its manifest.
CREATE TABLE oci_manifest_blobs (
    repo     TEXT NOT NULL,
    manifest TEXT NOT NULL,
    digest   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    PRIMARY KEY (repo, digest, manifest),
    FOREIGN KEY (repo, manifest) REFERENCES oci_manifests (repo, digest) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- The cascade from a deleted manifest finds its rows here.
CREATE INDEX oci_manifest_blobs_by_manifest ON oci_manifest_blobs (repo, manifest);
