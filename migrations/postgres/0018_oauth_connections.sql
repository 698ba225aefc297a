-- OAuth connections (Google, Slack through OAuth). A connection's status: 'ok', or 'broken' once
-- its provider refused to refresh its tokens (invalid_grant: revoked or expired consent); steps
-- that need a broken connection fail `connection_revoked` until it is authorized again.
ALTER TABLE connections ADD COLUMN status TEXT NOT NULL DEFAULT 'ok';

-- Authorization requests in flight: the `state` parameter (stored as its SHA-256, hex) bound to
-- the account that asked, the connection name to create, and the PKCE verifier (sealed, hex).
-- Single use (taken by deleting the row) and expiring ten minutes after creation.
CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    verifier TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);
