-- Persona jobs of one (trigger, user) run one at a time, so the second updates what the first created.
-- The index finds a running one when claiming; the unique index closes the race between two replicas.
CREATE INDEX IF NOT EXISTS jobs_trigger_user ON jobs (trigger_name, user_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_running_persona_job ON jobs (trigger_name, user_id)
    WHERE state = 'running' AND action = 'create_persona';
