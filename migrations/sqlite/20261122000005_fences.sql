-- Fencing tokens: the newest lease token per camera. Events written under an older token are
-- refused, so a process that lost a camera's lease cannot write for it.
CREATE TABLE camera_fences (
    camera_id TEXT PRIMARY KEY,
    token     BIGINT NOT NULL
);
