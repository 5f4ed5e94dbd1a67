-- Events that caused work (raw JSON kept for replay), and the dedupe truth: one row per (source, event id).
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    raw TEXT NOT NULL,
    UNIQUE (source, event_id)
);

-- Jobs: one per (event, matching trigger), with their state, attempts, progress and outcome.
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_row INTEGER REFERENCES events (id),
    trigger_name TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT,
    context TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    run_at_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    progress TEXT NOT NULL DEFAULT '{}',
    last_error TEXT,
    outcome TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at_ms);

-- Which Mavera persona a (trigger, user) pair created, so later events update it instead of creating another.
CREATE TABLE IF NOT EXISTS personas (
    trigger_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    persona_id TEXT NOT NULL,
    name TEXT,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (trigger_name, user_id)
);
