-- Less written per accepted webhook.
--
-- An event's payload is kept once: an event that starts runs leaves `data` NULL, because each
-- run's `event` holds the same payload (and nothing reads `events.data`); an event that starts
-- no run keeps it.
ALTER TABLE events ALTER COLUMN data DROP NOT NULL;

-- Index only the rows a lookup can find. Most events carry no dedupe key, most runs are not a
-- fan-out's children, and a ledger row has no `seq` until the sequencer numbers it: leaving
-- those rows out saves an index entry per accepted webhook (three) and per run update that is
-- not HOT (one). Every query on these columns compares them with `=` or `>`, which implies
-- NOT NULL, so each index still serves it.
DROP INDEX events_dedupe;
CREATE UNIQUE INDEX events_dedupe ON events(account_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
DROP INDEX runs_by_parent;
CREATE INDEX runs_by_parent ON runs (parent_run_id, parent_seq, item_index) WHERE parent_run_id IS NOT NULL;
DROP INDEX usage_account;
CREATE INDEX usage_account ON usage_ledger(account_id, seq) WHERE seq IS NOT NULL;
DROP INDEX usage_seq;
CREATE UNIQUE INDEX usage_seq ON usage_ledger(seq) WHERE seq IS NOT NULL;
