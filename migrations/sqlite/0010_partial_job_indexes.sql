-- A job is recorded pending, with its event, before the webhook is answered: every index on `jobs` is
-- written on that path. Three indexes serve only finished or running jobs, so they now hold only those
-- rows and a new pending job writes none of them (5 b-trees per job row instead of 8). Each query that read
-- them repeats the index's WHERE word for word, which is what lets SQLite use a partial index.
-- Retention's oldest finished jobs (`upkeep::sql::DELETE_OLD_JOBS`).
DROP INDEX IF EXISTS jobs_state_updated;
CREATE INDEX IF NOT EXISTS jobs_finished_updated ON jobs (state, updated_ms) WHERE state IN ('done', 'dead', 'held');
-- Briefs and personas: finished jobs of one action, newest first (`reads::Sql::finished`).
DROP INDEX IF EXISTS jobs_action_state_id;
CREATE INDEX IF NOT EXISTS jobs_done_action_id ON jobs (action, id) WHERE state = 'done';
-- A persona job waits while another for the same trigger and user runs (the claim's `CLAIM_BUSY_SQL`).
DROP INDEX IF EXISTS jobs_trigger_user;
CREATE INDEX IF NOT EXISTS jobs_running_persona ON jobs (trigger_name, user_id) WHERE state = 'running' AND action = 'create_persona';
