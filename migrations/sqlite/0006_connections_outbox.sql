-- Vendor credentials per account (SPEC §6). `sealed` is the AES-256-GCM sealed credentials,
-- hex-encoded; the runtime never holds them in plain text.
CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    sandbox BIGINT NOT NULL DEFAULT 0,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX connections_by_provider ON connections (account_id, provider);

-- What sandbox connections and test runs would have sent, written in the transaction that
-- completes the step, exactly once per step execution (unique run id and step seq). Ids are
-- time-ordered (UUIDv7), so listing by id is listing oldest first.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_seq BIGINT NOT NULL,
    step_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    connection_name TEXT,
    recipient TEXT,
    rendered TEXT NOT NULL,
    usage TEXT NOT NULL,
    is_test BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, step_seq)
);
CREATE INDEX outbox_by_account ON outbox (account_id, id);
