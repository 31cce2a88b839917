-- A fill in progress somewhere in the cluster: the replica fetching `key`
-- from upstream, where the others relay it from, and until when its lease
-- holds (renewed while it runs). `epoch` grows with every new owner, so a
-- stale owner's renewals and release match no row.
CREATE TABLE fills (
    key         TEXT COLLATE "C" PRIMARY KEY,
    owner       TEXT NOT NULL,
    owner_url   TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
