-- API keys get an id (UUIDv7 text, like every other id) so the admin can list and revoke them
-- without ever seeing a key or its hash, and a coarse last-use time (written at most once a
-- minute per key by the API's authentication). Revoking a key deletes its row.
--
-- Keys made before this migration get an id derived from their hash: its first 32 hex digits,
-- laid out as a UUID (unique, since the hashes are SHA-256 of 256-bit random keys).
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id =
    substr(key_hash, 1, 8) || '-' || substr(key_hash, 9, 4) || '-' || substr(key_hash, 13, 4) || '-'
        || substr(key_hash, 17, 4) || '-' || substr(key_hash, 21, 12);
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);
