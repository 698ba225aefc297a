-- The ledger's `seq` is assigned after commit by a serialised sequencer (see store/usage.rs), so
-- a billing reader paging with `seq > after` never skips a row that commits late. Rows are
-- inserted with seq NULL; `id` (deterministic per charge) becomes the primary key.
-- `day` is the local date (account timezone) the row was charged on, for per-day and per-month
-- aggregates on both databases.
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_pkey;
ALTER TABLE usage_ledger ALTER COLUMN seq DROP DEFAULT;
ALTER TABLE usage_ledger ALTER COLUMN seq DROP NOT NULL;
DROP SEQUENCE IF EXISTS usage_ledger_seq_seq;
ALTER TABLE usage_ledger DROP CONSTRAINT IF EXISTS usage_ledger_id_key;
ALTER TABLE usage_ledger ADD PRIMARY KEY (id);
ALTER TABLE usage_ledger ADD COLUMN day TEXT;
UPDATE usage_ledger SET day = to_char(to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD');
ALTER TABLE usage_ledger ALTER COLUMN day SET NOT NULL;
CREATE UNIQUE INDEX usage_seq ON usage_ledger(seq);
CREATE INDEX usage_unsequenced ON usage_ledger(created_at, id) WHERE seq IS NULL;
CREATE INDEX usage_account_day ON usage_ledger(account_id, day);
