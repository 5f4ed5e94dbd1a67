-- Retention walks the oldest events and the longest-finished jobs first, a small batch at a time.
CREATE INDEX IF NOT EXISTS events_received ON events (received_ms);
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_ms);
-- Erasure finds everything about one person by user id: events have events_user; these tables' keys lead
-- with the trigger's name.
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id);
CREATE INDEX IF NOT EXISTS personas_user ON personas (user_id);
CREATE INDEX IF NOT EXISTS cooldowns_user ON cooldowns (user_id);
CREATE INDEX IF NOT EXISTS digest_events_user ON digest_events (user_id);
