-- Events: one row per event, in the shape of the consumer contract, plus the outbox flag.
-- Timestamps are RFC 3339 UTC text with milliseconds (fixed width, so they sort as text).
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type    TEXT    NOT NULL,
    camera_id     TEXT    NOT NULL,
    timestamp     TEXT    NOT NULL,
    frame_number  BIGINT,
    snapshot_path TEXT,
    event_data    TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    published     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_unpublished ON events (id) WHERE published = FALSE;
CREATE INDEX events_camera ON events (camera_id, id);
CREATE INDEX events_type ON events (event_type, id);
CREATE INDEX events_timestamp ON events (timestamp);
