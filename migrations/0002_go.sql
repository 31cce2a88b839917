-- Go modules. Rows are written only after the blob they name is complete and
-- indexed in `blobs`; evicting a blob drops what points at it.

-- The immutable files of canonical versions: served from the store forever.
CREATE TABLE go_files (
    module     TEXT NOT NULL,                 -- unescaped module path
    version    TEXT NOT NULL,                 -- canonical version
    kind       TEXT NOT NULL CHECK (kind IN ('info', 'mod', 'zip')),
    digest     TEXT NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,              -- unix seconds
    PRIMARY KEY (module, version, kind)
) STRICT, WITHOUT ROWID;

CREATE INDEX go_files_by_digest ON go_files (digest);

-- Answers that change upstream and expire: `list`, `@latest`, version queries,
-- checksum database lookups and partial tiles, and every 404/410 (negative
-- caching). Small by construction (the fetch is size-bounded), so inline.
CREATE TABLE go_answers (
    key        TEXT PRIMARY KEY NOT NULL,     -- "list example.com/m", "sumdb sum.golang.org/lookup/…"
    status     INTEGER NOT NULL,              -- 200, 404 or 410
    body       BLOB NOT NULL,
    fetched_at INTEGER NOT NULL               -- unix seconds; freshness is judged with the TTLs in force
) STRICT;

-- Full checksum database tiles: immutable by construction of the log.
CREATE TABLE go_sumdb_tiles (
    sumdb  TEXT NOT NULL,
    tile   TEXT NOT NULL,                     -- "tile/8/0/x001/234"
    digest TEXT NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    size   INTEGER NOT NULL,
    PRIMARY KEY (sumdb, tile)
) STRICT, WITHOUT ROWID;

CREATE INDEX go_sumdb_tiles_by_digest ON go_sumdb_tiles (digest);
