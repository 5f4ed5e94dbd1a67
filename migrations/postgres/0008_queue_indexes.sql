-- The claim's indexes, chosen by their shape and not by statistics that a fresh or fast-growing table does not
-- have yet. Measured under load (auto_explain, `cargo bench --bench load` with BENCH_POSTGRES=1): with the
-- table's statistics still those of an empty one, a newest-first claim took 454 ms. It sorted the whole
-- pending backlog (1,336 rows) because `jobs_due` gave the run order but not the id order within it. For
-- each of those rows, it looked for an older pending persona job of the same person along
-- `jobs_action_state_id` (action, state, id < this one), 668 rows each, instead of along `jobs_user`.
-- The run order, ties broken by id, is now the index's own (SQLite's index ends in the rowid already), so a
-- claim stops at its first free row whatever the planner estimates.
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, run_at_ms, id);
-- As migrations/sqlite/0010_partial_job_indexes.sql: indexes that serve only finished jobs hold only those, so
-- a new pending job and its claim write fewer b-trees, and the persona-order guard has no (action, state, id)
-- index to wander along.
DROP INDEX IF EXISTS jobs_state_updated;
CREATE INDEX IF NOT EXISTS jobs_finished_updated ON jobs (state, updated_ms) WHERE state IN ('done', 'dead', 'held');
DROP INDEX IF EXISTS jobs_action_state_id;
CREATE INDEX IF NOT EXISTS jobs_done_action_id ON jobs (action, id) WHERE state = 'done';
-- `one_running_persona_job` (unique, running persona jobs only) already serves the claim's wait.
DROP INDEX IF EXISTS jobs_trigger_user;
