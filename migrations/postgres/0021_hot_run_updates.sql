-- Each step's completion rewrites its run's row (status, context, position). A run row is about
-- 0.8 KB (it holds the event's payload), so at fillfactor 80 a page kept room for about two new
-- versions among its eight rows: under load two run updates in three were not HOT, and each
-- added an entry to every index of `runs`. At 50 a page holds about five rows and room for a
-- new version of each, and a later step's update reuses the space of versions pruned since.
-- Measured under load, the table is no larger: the non-HOT versions took that space elsewhere.
ALTER TABLE runs SET (fillfactor = 50);

-- Nothing reads the ledger by (account, day) since per-day figures come from `usage_rollup`
-- (0005): the index only cost an entry per ledger row.
DROP INDEX usage_account_day;
