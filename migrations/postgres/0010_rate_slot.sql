-- A step waiting for a vendor rate-limit slot is `throttled` (it was `pending`, like a retry),
-- and its slot has columns of its own (it was kept in the step's output, and parsed back).
ALTER TABLE step_runs ADD COLUMN rate_slot_at BIGINT;
ALTER TABLE step_runs ADD COLUMN rate_slot_key TEXT;
-- Steps waiting for a slot now keep it: a pending step without an error had been rate limited
-- (the engine wrote that output itself, so it is valid JSON).
UPDATE step_runs
SET status = 'throttled',
    rate_slot_at = CAST(CAST(output AS jsonb) -> 'rate_limited' ->> 'until_ms' AS BIGINT),
    rate_slot_key = CAST(output AS jsonb) -> 'rate_limited' ->> 'key',
    output = NULL
WHERE status = 'pending' AND error IS NULL AND output LIKE '{"rate_limited":%';
