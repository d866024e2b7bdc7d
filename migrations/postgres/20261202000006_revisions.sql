-- Revisions and the change sequence.
-- `revision`: 0 when an event is first saved, + 1 each time it is improved (the contract field).
-- `seq`: taken anew by every insert and every revision, so a reader that follows `seq` (SSE,
-- webhooks) sees an improved event again. Existing rows keep seq = id, so a stored cursor (an
-- id) stays valid as a `seq`.
ALTER TABLE events ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN seq BIGINT;
UPDATE events SET seq = id;
CREATE SEQUENCE events_seq;
SELECT setval('events_seq', COALESCE((SELECT MAX(id) FROM events), 0) + 1, false);
ALTER TABLE events ALTER COLUMN seq SET DEFAULT nextval('events_seq');
ALTER TABLE events ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX events_seq_idx ON events (seq);
