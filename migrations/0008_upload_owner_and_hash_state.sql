-- Who opened each push session (only they may go on with it, and the
-- per-identity quota counts rows by it), and the hash state after the
-- acknowledged bytes, so going on never re-reads them. Sessions from before
-- this migration have no owner: nobody can continue them, the sweep drops them.
ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN hash_state BLOB;
CREATE INDEX uploads_by_owner ON uploads (owner);
