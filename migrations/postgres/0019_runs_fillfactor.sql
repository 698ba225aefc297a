-- A run's row is updated as its steps complete (status, context, position). Leave room on each
-- page so those updates are HOT (no index touched, the old version pruned in place) instead of
-- a new tuple elsewhere plus an entry in each of the table's four indexes.
ALTER TABLE runs SET (fillfactor = 80);
