-- Sums of numbered ledger rows by account, local day, unit and workflow, kept by the sequencer
-- in the same transaction that numbers the rows (store/usage.rs), so aggregates read a few rows
-- per day instead of every ledger row.
CREATE TABLE usage_rollup (
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    unit TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    tokens_milli BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, unit, workflow_id)
);
INSERT INTO usage_rollup (account_id, day, unit, workflow_id, quantity, tokens_milli, cost_micros)
SELECT account_id, day, unit, workflow_id, SUM(quantity), SUM(tokens_milli), SUM(cost_micros)
FROM usage_ledger WHERE seq IS NOT NULL GROUP BY account_id, day, unit, workflow_id;
