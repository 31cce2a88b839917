-- Blobs whose row went (evicted, collected) while their object stays in the
-- bucket for a grace period: another replica may be streaming it right now.
-- The sweep deletes the object once the grace is over, under the blob's
-- lease and only if no row names it again (a refill, a push).
CREATE TABLE doomed_blobs (
    digest    TEXT COLLATE "C" PRIMARY KEY,
    doomed_at BIGINT NOT NULL
);
