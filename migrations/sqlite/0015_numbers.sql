-- Phone numbers bound to workflows: a call to `number` through the Twilio connection
-- `connection_id` starts a run of `workflow_id` (whose trigger is `call: {}`). A number belongs
-- to one account.
CREATE TABLE phone_numbers (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    number TEXT NOT NULL UNIQUE,
    workflow_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX phone_numbers_by_account ON phone_numbers (account_id, id);
