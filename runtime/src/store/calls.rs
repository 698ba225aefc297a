//! Voice calls: the row each call keeps in the store (where its script is, what the caller
//! gave, how it ended), read and written by Twilio's callbacks.

use sqlx::FromRow;

use super::Store;
use crate::Result;

/// A voice call.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct CallRow {
    /// The unguessable part of the call's callback URLs.
    pub token: String,
    /// Its account.
    pub account_id: String,
    /// The Twilio connection it was placed through.
    pub connection_id: String,
    /// The run of the step that placed it.
    pub run_id: String,
    /// That step execution's `seq`.
    pub step_seq: i64,
    /// That step's id.
    pub step_id: String,
    /// `outbound` (or `inbound`).
    pub direction: String,
    /// The caller.
    pub from_number: String,
    /// The called number.
    pub to_number: String,
    /// `standard` or `premium`.
    pub tier: String,
    /// Twilio's `CallSid`, once Twilio answered the create request.
    pub call_sid: Option<String>,
    /// The latest status: `dialing` until Twilio took it, then Twilio's (`queued`, `ringing`,
    /// `in-progress`, `completed`, `busy`, `no-answer`, `failed`, `canceled`).
    pub status: String,
    /// 1 once a final status is recorded.
    pub ended: i64,
    /// Twilio's `AnsweredBy` (machine detection).
    pub answered_by: Option<String>,
    /// `CallDuration` of the final status.
    pub duration_s: Option<i64>,
    /// `SipResponseCode` of the final status.
    pub sip_response_code: Option<i64>,
    /// The recording of the whole call, when one was asked for.
    pub recording_url: Option<String>,
    /// The script as written (JSON).
    pub script: String,
    /// The run's scope when the call was placed (JSON), which the script's text is rendered with.
    pub scope: String,
    /// Where the script is (JSON, the voice module's own shape).
    pub state: String,
    /// The last TwiML document answered (repeated to a repeated request).
    pub twiml: Option<String>,
    /// Bumped by every state write (optimistic concurrency).
    pub version: i64,
    /// Placed at (ms).
    pub created_at: i64,
    /// Ended at (ms).
    pub ended_at: Option<i64>,
}

const COLUMNS: &str = "token, account_id, connection_id, run_id, step_seq, step_id, direction, from_number, to_number, tier, call_sid, status, \
                       ended, answered_by, duration_s, sip_response_code, recording_url, script, scope, state, twiml, version, created_at, ended_at";

/// The final status of a call, as Twilio reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// `completed`, `busy`, `no-answer`, `failed` or `canceled`.
    pub status: String,
    /// `CallDuration`, seconds.
    pub duration_s: i64,
    /// `AnsweredBy`, if Twilio said.
    pub answered_by: Option<String>,
    /// `SipResponseCode`, if Twilio said.
    pub sip_response_code: Option<i64>,
    /// `RecordingUrl`, if Twilio said.
    pub recording_url: Option<String>,
}

impl Store {
    /// Records a call about to be placed.
    pub async fn insert_call(&self, c: &CallRow) -> Result<()> {
        let sql = format!(
            "INSERT INTO voice_calls ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&c.token)
            .bind(&c.account_id)
            .bind(&c.connection_id)
            .bind(&c.run_id)
            .bind(c.step_seq)
            .bind(&c.step_id)
            .bind(&c.direction)
            .bind(&c.from_number)
            .bind(&c.to_number)
            .bind(&c.tier)
            .bind(&c.call_sid)
            .bind(&c.status)
            .bind(c.ended)
            .bind(&c.answered_by)
            .bind(c.duration_s)
            .bind(c.sip_response_code)
            .bind(&c.recording_url)
            .bind(&c.script)
            .bind(&c.scope)
            .bind(&c.state)
            .bind(&c.twiml)
            .bind(c.version)
            .bind(c.created_at)
            .bind(c.ended_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// A call by its token.
    pub async fn call_by_token(&self, token: &str) -> Result<Option<CallRow>> {
        let sql = format!("SELECT {COLUMNS} FROM voice_calls WHERE token = $1");
        // From the writer: a callback must see the write that the previous one made.
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(token).fetch_optional(&self.writer).await?)
    }

    /// Whether each of the account's business-hour schedules is open at `at` (ms), by name: what
    /// a call's `hours` nodes and `hours("name")` read. A schedule that no longer parses is
    /// left out (read as closed, with a problem in the call's output).
    pub async fn hours_open(&self, account_id: &str, at: i64) -> Result<serde_json::Value> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, definition FROM business_hours WHERE account_id = $1 ORDER BY id LIMIT 1000")
            .bind(account_id)
            .fetch_all(&self.reader)
            .await?;
        let mut open = serde_json::Map::new();
        for (name, definition) in rows {
            let parsed = serde_json::from_str(&definition).ok().and_then(|json| crate::hours::BusinessHours::parse(&json).ok());
            if let Some(hours) = parsed {
                open.insert(name, serde_json::Value::Bool(hours.is_open(at)));
            }
        }
        Ok(serde_json::Value::Object(open))
    }

    /// A call by Twilio's `CallSid` (inbound status callbacks name calls by it).
    pub async fn call_by_sid(&self, call_sid: &str) -> Result<Option<CallRow>> {
        let sql = format!("SELECT {COLUMNS} FROM voice_calls WHERE call_sid = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(call_sid).fetch_optional(&self.writer).await?)
    }

    /// The call a run answered (`voice.answer`, the run's first step).
    pub async fn call_of_run(&self, run_id: &str) -> Result<Option<CallRow>> {
        let sql = format!("SELECT {COLUMNS} FROM voice_calls WHERE run_id = $1 AND direction = 'inbound'");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_optional(&self.writer).await?)
    }

    /// Names the step execution that waits on a call (an inbound call's row is made before its
    /// `voice.answer` step runs).
    pub async fn attach_call_step(&self, token: &str, step_seq: i64) -> Result<()> {
        sqlx::query("UPDATE voice_calls SET step_seq = $2 WHERE token = $1").bind(token).bind(step_seq).execute(&self.writer).await?;
        Ok(())
    }

    /// Records Twilio's `CallSid` of a placed call (and that Twilio took it).
    pub async fn set_call_sid(&self, token: &str, call_sid: &str) -> Result<()> {
        sqlx::query("UPDATE voice_calls SET call_sid = $2, status = CASE WHEN status = 'dialing' THEN 'queued' ELSE status END WHERE token = $1")
            .bind(token)
            .bind(call_sid)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Moves a live call's status forward to `status`, if it is still one of `earlier` (so an
    /// out-of-order `ringing` after `in-progress` changes nothing). True if it moved.
    pub async fn advance_call_status(&self, token: &str, status: &str, earlier: &[&str]) -> Result<bool> {
        if earlier.is_empty() {
            return Ok(false);
        }
        let list: Vec<String> = (0..earlier.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!("UPDATE voice_calls SET status = $2 WHERE token = $1 AND ended = 0 AND status IN ({})", list.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token).bind(status);
        for s in earlier {
            query = query.bind(*s);
        }
        Ok(query.execute(&self.writer).await?.rows_affected() == 1)
    }

    /// Records who answered (machine detection), unless already known.
    pub async fn set_call_answered_by(&self, token: &str, answered_by: &str) -> Result<()> {
        sqlx::query("UPDATE voice_calls SET answered_by = $2 WHERE token = $1 AND answered_by IS NULL")
            .bind(token)
            .bind(answered_by)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records a call's final status, once: true for the write that ended it, false when it had
    /// already ended (the first final status wins).
    pub async fn end_call(&self, token: &str, end: &CallEnd, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE voice_calls SET status = $2, ended = 1, duration_s = $3, answered_by = COALESCE($4, answered_by), \
             sip_response_code = $5, recording_url = COALESCE($6, recording_url), ended_at = $7 WHERE token = $1 AND ended = 0",
        )
        .bind(token)
        .bind(&end.status)
        .bind(end.duration_s)
        .bind(&end.answered_by)
        .bind(end.sip_response_code)
        .bind(&end.recording_url)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the recording of the whole call, when it arrives after the call ended.
    pub async fn set_call_recording(&self, token: &str, url: &str) -> Result<()> {
        sqlx::query("UPDATE voice_calls SET recording_url = $2 WHERE token = $1").bind(token).bind(url).execute(&self.writer).await?;
        Ok(())
    }

    /// Saves where the script is and the document just answered, if nobody saved since
    /// `version` was read. False when another request did (the caller re-reads).
    pub async fn save_call_state(&self, token: &str, version: i64, state: &str, twiml: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE voice_calls SET state = $2, twiml = $3, version = version + 1 WHERE token = $1 AND version = $4")
            .bind(token)
            .bind(state)
            .bind(twiml)
            .bind(version)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that status callback `sequence_number` of a call was seen. False if it was
    /// already (a repeat).
    pub async fn record_call_event(&self, token: &str, sequence_number: i64, status: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO voice_call_events (token, sequence_number, status, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (token, sequence_number) DO NOTHING",
        )
        .bind(token)
        .bind(sequence_number)
        .bind(status)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
