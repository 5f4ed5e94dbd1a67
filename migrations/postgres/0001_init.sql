-- The same schema as migrations/sqlite, in Postgres types. Applied under sqlx's advisory lock, so several
-- replicas starting at once migrate once.

CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    raw TEXT NOT NULL,
    UNIQUE (source, event_id)
);

CREATE TABLE IF NOT EXISTS jobs (
    id BIGSERIAL PRIMARY KEY,
    event_row BIGINT REFERENCES events (id),
    trigger_name TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT,
    context JSONB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    run_at_ms BIGINT NOT NULL,
    lease_until_ms BIGINT,
    progress JSONB NOT NULL DEFAULT '{}',
    last_error TEXT,
    outcome JSONB,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at_ms);

CREATE TABLE IF NOT EXISTS personas (
    trigger_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    persona_id TEXT NOT NULL,
    name TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (trigger_name, user_id)
);

CREATE TABLE IF NOT EXISTS cooldowns (
    trigger_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (trigger_name, user_id)
);

CREATE TABLE IF NOT EXISTS budget_usage (
    scope TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (scope, window_start_ms)
);

CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL
);

-- Limits shared by every replica: Mavera requests in the sliding window, and chat calls in flight.
CREATE TABLE IF NOT EXISTS rate_log (
    id BIGSERIAL PRIMARY KEY,
    bucket TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_log_bucket_at ON rate_log (bucket, at_ms);

CREATE TABLE IF NOT EXISTS slots (
    bucket TEXT NOT NULL,
    slot INTEGER NOT NULL,
    holder TEXT,
    until_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, slot)
);
