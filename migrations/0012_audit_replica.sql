-- The replica that served a request, when several share one index
-- ([cluster] replica); NULL on a single node.
ALTER TABLE audit ADD COLUMN replica TEXT;
