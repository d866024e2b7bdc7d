-- Revisions and the change sequence.
-- `revision`: 0 when an event is first saved, + 1 each time it is improved (the contract field).
-- `seq`: taken anew by every insert and every revision (MAX + 1 inside the write transaction;
-- SQLite has one writer at a time), so a reader that follows `seq` (SSE, webhooks) sees an
-- improved event again. Existing rows keep seq = id, so a stored cursor (an id) stays valid.
ALTER TABLE events ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN seq INTEGER;
UPDATE events SET seq = id;
CREATE UNIQUE INDEX events_seq_idx ON events (seq);
