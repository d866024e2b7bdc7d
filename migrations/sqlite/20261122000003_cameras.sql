-- Cameras added through the API, as the JSON body that added them; started again at each start.
CREATE TABLE cameras (
    id         TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
