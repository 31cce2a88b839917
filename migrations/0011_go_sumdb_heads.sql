-- The latest tree head of each checksum database that the mirror verified
-- (its signed note), so a database that later forks or rolls back is caught
-- across restarts. One small row per database; only ever moves forward.
CREATE TABLE go_sumdb_heads (
    sumdb TEXT PRIMARY KEY,
    size  INTEGER NOT NULL,
    note  BLOB NOT NULL
) STRICT;
