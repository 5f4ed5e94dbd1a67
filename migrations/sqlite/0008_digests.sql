-- Digests: events of one trigger gathered per key (e.g. a persona type) until a window closes or `max` is
-- reached; then one job runs the trigger's action once for all of them.
CREATE TABLE IF NOT EXISTS digests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_name TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    closes_ms INTEGER NOT NULL,
    max_events INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    -- The job that runs the action, once the digest is closed; NULL while it is open.
    job_id INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS digests_open ON digests (trigger_name, key) WHERE job_id IS NULL;
CREATE INDEX IF NOT EXISTS digests_closing ON digests (closes_ms) WHERE job_id IS NULL;

-- One row per gathering job: its retry adds nothing twice.
CREATE TABLE IF NOT EXISTS digest_events (
    job_id INTEGER PRIMARY KEY,
    digest_id INTEGER NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    user_id TEXT,
    context TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS digest_events_of ON digest_events (digest_id, job_id);
