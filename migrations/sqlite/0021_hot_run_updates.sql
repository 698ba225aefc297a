-- Nothing reads the ledger by (account, day) since per-day figures come from `usage_rollup`
-- (0005): the index only cost an entry per ledger row. (PostgreSQL's 0021 also leaves more room
-- on the pages of `runs`; SQLite has no such setting.)
DROP INDEX usage_account_day;
