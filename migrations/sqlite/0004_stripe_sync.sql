-- Stripe Billing sync (api/src/billing_sync.rs): the Stripe customer an account's usage is
-- reported to (none: not reported), and named cursors of jobs that page the ledger by `seq`.
ALTER TABLE accounts ADD COLUMN stripe_customer_id TEXT;
CREATE TABLE sync_cursors (
    name TEXT PRIMARY KEY,
    after_seq BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
