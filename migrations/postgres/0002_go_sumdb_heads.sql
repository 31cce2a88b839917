-- The latest tree head of each checksum database that some replica verified
-- (its signed note), so a database that later forks or rolls back is caught
-- by every replica and across restarts. Only ever moves forward.
CREATE TABLE go_sumdb_heads (
    sumdb TEXT COLLATE "C" PRIMARY KEY,
    size  BIGINT NOT NULL,
    note  BYTEA NOT NULL
);
