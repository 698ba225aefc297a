-- Contact rules (quiet hours) per account, as JSON; NULL is the defaults.
ALTER TABLE accounts ADD COLUMN contact_rules TEXT;

-- Numbers that must not be texted or called: one row per account, number (E.164) and channel
-- (`sms`, `voice` or `all`). A send reads them in the transaction that marks it dispatching.
CREATE TABLE opt_outs (
    account_id TEXT NOT NULL,
    number TEXT NOT NULL,
    channel TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, number, channel)
);
