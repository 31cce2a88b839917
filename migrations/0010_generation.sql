-- The deletion generation: bumped in the same transaction by every path that
-- deletes blob rows (eviction, sweeps, repairs, quarantine), so a serving
-- process can tell that what it holds in memory about the index may be stale,
-- even when the deleting process was another one (`mirror cache gc`).
CREATE TABLE generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;

INSERT INTO generation (id, value) VALUES (1, 0);
