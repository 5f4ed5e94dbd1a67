-- The console: every event is listed (those that matched no trigger too), with who it was about, the
-- request's headers (secrets masked) and the signature check; each job keeps the story of its attempts.
ALTER TABLE events ADD COLUMN IF NOT EXISTS user_id TEXT;
ALTER TABLE events ADD COLUMN IF NOT EXISTS headers TEXT NOT NULL DEFAULT '{}';
ALTER TABLE events ADD COLUMN IF NOT EXISTS signature TEXT NOT NULL DEFAULT '';
-- 'triggered' (it has jobs) or 'ignored' (no trigger matched).
ALTER TABLE events ADD COLUMN IF NOT EXISTS status TEXT NOT NULL DEFAULT 'triggered';
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS history JSONB NOT NULL DEFAULT '[]';

-- Filters and the overview read through these; pages go by key (id), never by offset.
CREATE INDEX IF NOT EXISTS events_name ON events (name, id);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, id);
CREATE INDEX IF NOT EXISTS events_status ON events (status, id);
CREATE INDEX IF NOT EXISTS jobs_event ON jobs (event_row);
CREATE INDEX IF NOT EXISTS jobs_state_event ON jobs (state, event_row);
-- Dead letters, and briefs and personas (finished jobs of one action), newest first.
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_action_state_id ON jobs (action, state, id);

-- Events per minute, source and status, kept as they are recorded: the overview and its chart read at most
-- a day of minutes, never the events themselves.
CREATE TABLE IF NOT EXISTS event_minutes (
    minute BIGINT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (minute, source, status)
);
