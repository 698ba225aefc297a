-- The ledger's `seq` is assigned after commit by the sequencer (see store/usage.rs); `id` becomes
-- the primary key; `day` is the local date (account timezone) of the charge. SQLite cannot
-- change a primary key in place, so the table is rebuilt.
CREATE TABLE usage_ledger_new (
    id TEXT PRIMARY KEY,
    seq BIGINT,
    account_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_id TEXT,
    unit TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    tokens_milli BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    day TEXT NOT NULL
);
INSERT INTO usage_ledger_new (id, seq, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli,
    cost_micros, created_at, day)
SELECT id, seq, account_id, workflow_id, run_id, step_id, unit, quantity, tokens_milli, cost_micros, created_at,
    strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')
FROM usage_ledger;
DROP TABLE usage_ledger;
ALTER TABLE usage_ledger_new RENAME TO usage_ledger;
CREATE UNIQUE INDEX usage_seq ON usage_ledger(seq);
CREATE INDEX usage_unsequenced ON usage_ledger(created_at, id) WHERE seq IS NULL;
CREATE INDEX usage_account ON usage_ledger(account_id, seq);
CREATE INDEX usage_account_day ON usage_ledger(account_id, day);
CREATE INDEX usage_run ON usage_ledger(run_id);
