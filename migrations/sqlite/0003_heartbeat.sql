-- One row, rewritten by /readyz: proof that the store takes writes.
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL
);
