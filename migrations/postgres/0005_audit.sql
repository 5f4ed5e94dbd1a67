-- Who did what through the console, the admin API, the CLI or a signal: sign-ins (and failed ones),
-- replays, reloads, erasures. Newest first by id; retention prunes by time.
CREATE TABLE IF NOT EXISTS audit (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    action TEXT NOT NULL,
    via TEXT NOT NULL,
    client TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
