-- Finds a running persona job of the same (trigger, user) when claiming: such jobs run one at a time.
CREATE INDEX IF NOT EXISTS jobs_trigger_user ON jobs (trigger_name, user_id);
