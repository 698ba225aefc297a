-- Switchboard core schema (PostgreSQL). Times are epoch milliseconds (BIGINT), ids are UUIDv7 text,
-- JSON is TEXT, flags are 0/1 integers: the same DML then runs on SQLite and PostgreSQL.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_at BIGINT NOT NULL
);
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    version BIGINT NOT NULL,
    trigger_kind TEXT NOT NULL,
    event_type TEXT,
    webhook_token TEXT UNIQUE,
    deleted BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workflows_account ON workflows(account_id, id);
CREATE INDEX workflows_event ON workflows(account_id, event_type) WHERE deleted = 0;
CREATE TABLE workflow_versions (
    workflow_id TEXT NOT NULL REFERENCES workflows(id),
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    source TEXT NOT NULL,
    dedupe_key TEXT,
    response TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_dedupe ON events(account_id, dedupe_key);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    context TEXT NOT NULL,
    error TEXT,
    is_test BIGINT NOT NULL DEFAULT 0,
    step_index BIGINT NOT NULL DEFAULT 0,
    step_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX runs_account ON runs(account_id, id);
CREATE INDEX runs_workflow ON runs(workflow_id, id);
CREATE TABLE step_runs (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    input TEXT,
    output TEXT,
    error TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    due_at BIGINT,
    PRIMARY KEY (run_id, seq)
);
-- The hot table: one row per run that has something left to do. Finished runs leave it.
-- A claim moves due_at to the lease's expiry, so an expired lease is simply due again.
CREATE TABLE run_queue (
    run_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    step_index BIGINT NOT NULL,
    step_seq BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    lease_token TEXT,
    dispatching BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX run_queue_due ON run_queue(due_at);
CREATE TABLE waits (
    run_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    step_seq BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX waits_event ON waits(account_id, event_type);
CREATE TABLE usage_ledger (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_id TEXT,
    unit TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    tokens_milli BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_account ON usage_ledger(account_id, seq);
CREATE INDEX usage_run ON usage_ledger(run_id);
-- The queue row is updated on every claim and completion: leave room for HOT updates.
ALTER TABLE run_queue SET (fillfactor = 70);
