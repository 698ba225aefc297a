-- API keys get an id (UUIDv7 text, like every other id) so the admin can list and revoke them
-- without ever seeing a key or its hash, and a coarse last-use time (written at most once a
-- minute per key by the API's authentication). Revoking a key deletes its row.
--
-- SQLite cannot add a NOT NULL column without a default, so the table is rebuilt. Keys made
-- before this migration get an id derived from their hash: its first 32 hex digits, laid out
-- as a UUID (unique, since the hashes are SHA-256 of 256-bit random keys).
CREATE TABLE api_keys_new (
    key_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
INSERT INTO api_keys_new (key_hash, id, account_id, created_at)
SELECT key_hash,
       substr(key_hash, 1, 8) || '-' || substr(key_hash, 9, 4) || '-' || substr(key_hash, 13, 4) || '-'
           || substr(key_hash, 17, 4) || '-' || substr(key_hash, 21, 12),
       account_id, created_at
FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);
