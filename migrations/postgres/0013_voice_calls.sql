-- Voice calls: one row per call a `voice.call` step placed. The script's place in the call
-- (`state`: the node it waits on, what the caller gave, the path so far) lives here, so a
-- restart between two of Twilio's callbacks loses nothing. `token` is the unguessable part of
-- the call's callback URLs. `ended` turns 1 once, with the final status; the step completes
-- from this row.
CREATE TABLE voice_calls (
    token TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step_seq BIGINT NOT NULL,
    step_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number TEXT NOT NULL,
    tier TEXT NOT NULL,
    call_sid TEXT,
    status TEXT NOT NULL,
    ended BIGINT NOT NULL DEFAULT 0,
    answered_by TEXT,
    duration_s BIGINT,
    sip_response_code BIGINT,
    recording_url TEXT,
    script TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT NOT NULL,
    twiml TEXT,
    version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE UNIQUE INDEX voice_calls_by_sid ON voice_calls (call_sid) WHERE call_sid IS NOT NULL;
CREATE INDEX voice_calls_by_account ON voice_calls (account_id, created_at);
CREATE INDEX voice_calls_by_step ON voice_calls (run_id, step_seq);

-- Twilio's status callbacks seen, by call and SequenceNumber: a repeated one changes nothing.
CREATE TABLE voice_call_events (
    token TEXT NOT NULL,
    sequence_number BIGINT NOT NULL,
    status TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (token, sequence_number)
);
