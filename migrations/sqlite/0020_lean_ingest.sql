-- Less written per accepted webhook (as on PostgreSQL).
--
-- An event's payload is kept once: an event that starts runs leaves `data` NULL, because each
-- run's `event` holds the same payload (and nothing reads `events.data`); an event that starts
-- no run keeps it. SQLite cannot drop a NOT NULL in place: the table is rebuilt (nothing
-- references it).
CREATE TABLE events_new (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT,
    source TEXT NOT NULL,
    dedupe_key TEXT,
    response TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO events_new (id, account_id, type, data, source, dedupe_key, response, created_at)
    SELECT id, account_id, type, data, source, dedupe_key, response, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;

-- Index only the rows a lookup can find: most events carry no dedupe key, most runs are not a
-- fan-out's children, and a ledger row has no `seq` until the sequencer numbers it. Every
-- query on these columns compares them with `=` or `>`, which implies NOT NULL, so each index
-- still serves it. `usage_seq` stays whole here: SQLite answers `MAX(seq)` from a full index
-- only.
CREATE UNIQUE INDEX events_dedupe ON events(account_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
DROP INDEX runs_by_parent;
CREATE INDEX runs_by_parent ON runs (parent_run_id, parent_seq, item_index) WHERE parent_run_id IS NOT NULL;
DROP INDEX usage_account;
CREATE INDEX usage_account ON usage_ledger(account_id, seq) WHERE seq IS NOT NULL;
