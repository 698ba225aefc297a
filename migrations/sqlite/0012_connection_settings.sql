-- Non-secret settings of a connection (JSON object), returned by the API; e.g. a sandbox Twilio
-- connection's `simulate` outcomes of calls, keyed by the number called.
ALTER TABLE connections ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
