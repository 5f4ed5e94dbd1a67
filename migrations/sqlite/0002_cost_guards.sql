-- Cost guards: the last Mavera call per (trigger, user), and calls counted per budget window.
CREATE TABLE IF NOT EXISTS cooldowns (
    trigger_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (trigger_name, user_id)
);

CREATE TABLE IF NOT EXISTS budget_usage (
    scope TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (scope, window_start_ms)
);
