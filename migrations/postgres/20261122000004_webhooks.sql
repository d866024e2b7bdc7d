-- Each webhook's delivery cursor: every event up to last_id has been delivered or filtered out.
CREATE TABLE webhook_cursors (
    name    TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
