-- Where a push session's bytes are when replicas share them: one object per
-- acknowledged chunk, at uploads/<id>/<start> in the bucket, so a PATCH on
-- any replica goes on from the last acknowledged byte. `parts` lists the
-- chunks' first bytes in order; a chunk ends where the next one starts.
ALTER TABLE uploads ADD COLUMN parts BIGINT[] NOT NULL DEFAULT '{}';
