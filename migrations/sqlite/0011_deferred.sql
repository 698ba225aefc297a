-- A step whose action finishes later (`awaiting_completion`, shown as `waiting`) keeps the
-- vendor's handle of the pending operation (e.g. `{"call_sid": "CA…"}`, JSON) in a column of its
-- own: not in the user-visible output. The step's queue row is its poll deadline.
ALTER TABLE step_runs ADD COLUMN deferred_handle TEXT;
