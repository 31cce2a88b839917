-- The replica that served a request ([cluster] replica); NULL for rows a
-- process without [cluster] wrote.
ALTER TABLE audit ADD COLUMN replica TEXT;
