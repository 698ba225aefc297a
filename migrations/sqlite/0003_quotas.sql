-- Quotas for plans without overage (SPEC §5). `account_periods` holds, per account and calendar
-- month (its first day, account timezone), the tokens spent by rows of such accounts and the
-- tokens reserved by actions in flight; a reservation is checked and taken in one conditional
-- UPDATE of this row, so two steps racing for the last tokens cannot both pass. A reservation
-- lives on the step's queue row until the step completes (or the run is cancelled), so a crash
-- cannot leak it.
CREATE TABLE account_periods (
    account_id TEXT NOT NULL,
    period TEXT NOT NULL,
    spent_milli BIGINT NOT NULL DEFAULT 0,
    reserved_milli BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, period)
);
ALTER TABLE run_queue ADD COLUMN reserved_milli BIGINT NOT NULL DEFAULT 0;
ALTER TABLE run_queue ADD COLUMN reserved_period TEXT;
