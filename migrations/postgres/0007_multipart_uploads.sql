-- Multipart uploads to the bucket begun and not yet completed or aborted,
-- each touched as its parts go in. A replica killed mid-upload leaves its row:
-- the upkeep leader's sweep aborts the upload once it has been idle long
-- enough, since S3 keeps (and bills) the parts of an upload nobody finishes.
CREATE TABLE multipart_uploads (
    upload_id  TEXT COLLATE "C" PRIMARY KEY,
    object_key TEXT NOT NULL,
    touched_at BIGINT NOT NULL
);
CREATE INDEX multipart_uploads_touched ON multipart_uploads (touched_at);
