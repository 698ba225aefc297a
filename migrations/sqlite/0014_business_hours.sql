-- Business hours: an account's named schedules of opening hours, which IVR flows' `hours` node
-- reads ("are we open?"). `definition` is the schedule as JSON, `{timezone, weekly, holidays,
-- overrides}`, validated by `hours::BusinessHours::parse` before it is stored. (The table
-- `schedules` holds cron triggers: 0007.) Ids are time-ordered (UUIDv7): listing by id is
-- listing oldest first.
CREATE TABLE business_hours (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX business_hours_by_account ON business_hours (account_id, id);
