-- Identical requests (same client, connection, artifact, outcome) within one
-- second are recorded as one row with a count: a build hammering one file
-- must not grow the index by a row per request.
ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
