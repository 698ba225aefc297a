-- Schedule triggers: one row per enabled workflow with a schedule. `next_tick` is the next
-- tick to fire; `due_at` is when a scheduler pass should look at the row (the tick, or a lease
-- expiry while a pass holds it). Firing is idempotent (each tick's event has the dedupe key
-- `schedule:<workflow>:<tick>`), so a pass that dies mid-way is simply redone.
CREATE TABLE schedules (
    workflow_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    next_tick BIGINT NOT NULL,
    due_at BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (due_at);
