-- `GET /healthz`, the console's overview and `jobs` count the finished jobs. Those are nearly every job a
-- 90-day store keeps, and counting them passed over all of them on each call: seconds of CPU per health
-- probe on a store of tens of millions. The count is now kept as jobs become done and stop being done
-- (retention, erasure, a replay), by these triggers, in the same transaction. The other states are few
-- (bounded by MAX_BACKLOG and the dead letters) and are still counted along the state index.
CREATE TABLE IF NOT EXISTS job_done_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR REPLACE INTO job_done_count (id, n) VALUES (1, (SELECT COUNT(*) FROM jobs WHERE state = 'done'));

CREATE TRIGGER IF NOT EXISTS jobs_done_inserted AFTER INSERT ON jobs WHEN new.state = 'done' BEGIN
    UPDATE job_done_count SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_done_deleted AFTER DELETE ON jobs WHEN old.state = 'done' BEGIN
    UPDATE job_done_count SET n = n - 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_became_done AFTER UPDATE OF state ON jobs
    WHEN new.state = 'done' AND old.state != 'done' BEGIN
    UPDATE job_done_count SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_stopped_being_done AFTER UPDATE OF state ON jobs
    WHEN old.state = 'done' AND new.state != 'done' BEGIN
    UPDATE job_done_count SET n = n - 1 WHERE id = 1;
END;
