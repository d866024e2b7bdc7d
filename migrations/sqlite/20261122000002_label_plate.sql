-- Indexed copies of event_data.label and event_data.plate, so the API filters by them with one
-- index scan instead of parsing JSON.
ALTER TABLE events ADD COLUMN label TEXT;
ALTER TABLE events ADD COLUMN plate TEXT;
CREATE INDEX events_label ON events (label, id);
CREATE INDEX events_plate ON events (plate, id);
