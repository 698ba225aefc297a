//! Call analytics, read only: the call history of an account (filtered, paged newest first),
//! a workflow's run, step and script-node figures over a time window, and the figures of an
//! account's day. Every query is scoped to one account: another account's calls and runs are
//! never read.
//!
//! Times are instants (ms); windows are `[from, to)`. A run is counted in a window by its
//! `created_at` (when it started, as the API shows it); a call by its `created_at` (when it was
//! placed). Statuses of runs and steps are the names in [`crate::status`]; a call's status is
//! Twilio's, or `dialing`/`refused` of the voice module.

use std::collections::HashMap;

use chrono::TimeZone;
use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::FromRow;

use super::Store;
use crate::Result;
use crate::metering::{PriceList, Unit, voice_minutes};
use crate::status::{RunStatus, StepStatus};

/// How long a call can be live at most: the longest ring (10 minutes) plus the longest call
/// (`max_duration`, 4 hours), with room to spare. A call without a final status older than this
/// is not counted as active (its final status was lost; the step's poll settles it).
pub const LONGEST_CALL_MS: i64 = 5 * 60 * 60 * 1000;

/// How many workflows the dashboard names.
pub const TOP_WORKFLOWS: i64 = 5;

/// Filters of the call history. `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Calls placed at or after this instant (ms).
    pub from: Option<i64>,
    /// Calls placed before this instant (ms).
    pub to: Option<i64>,
    /// Calls of this workflow's runs.
    pub workflow_id: Option<String>,
    /// Calls in this status (`completed`, `no-answer`, `refused`, …).
    pub status: Option<String>,
    /// Calls from or to this number.
    pub number: Option<String>,
    /// `outbound` or `inbound`.
    pub direction: Option<String>,
}

/// Where a page of the call history ended: the last call's place in the order (newest first,
/// then by run and step execution, descending). The call's token is the secret of its callback
/// URLs, so it is not part of a cursor; a run's step execution places its calls milliseconds
/// apart at least (each attempt is a request to Twilio), so these three fields tell calls apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCursor {
    /// The call's `created_at` (ms).
    pub created_at: i64,
    /// Its run.
    pub run_id: String,
    /// Its step execution's `seq`.
    pub step_seq: i64,
}

impl CallCursor {
    /// The cursor as the API gives it: `<created_at>.<step_seq>.<run_id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.created_at, self.step_seq, self.run_id)
    }

    /// A cursor that [`CallCursor::encode`] made, or `None`.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let created_at = parts.next()?.parse().ok()?;
        let step_seq = parts.next()?.parse().ok()?;
        let run_id = parts.next().filter(|r| !r.is_empty())?.to_string();
        Some(Self { created_at, run_id, step_seq })
    }
}

/// A call as the history shows it.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct CallRecord {
    /// The run of the step that placed it.
    pub run_id: String,
    /// That step execution's `seq`.
    pub step_seq: i64,
    /// That step's id.
    pub step_id: String,
    /// The run's workflow (`None` only if the run is gone).
    pub workflow_id: Option<String>,
    /// `outbound` (or `inbound`).
    pub direction: String,
    /// The caller.
    pub from_number: String,
    /// The called number.
    pub to_number: String,
    /// `standard` or `premium`.
    pub tier: String,
    /// Twilio's `CallSid`; `None` while dialing, or when Twilio refused the call.
    pub call_sid: Option<String>,
    /// The latest status.
    pub status: String,
    /// Twilio's `AnsweredBy`.
    pub answered_by: Option<String>,
    /// The final status's `CallDuration`, seconds; `None` while live.
    pub duration_s: Option<i64>,
    /// The recording of the whole call.
    pub recording_url: Option<String>,
    /// Placed at (ms).
    pub created_at: i64,
}

impl CallRecord {
    /// The minutes billed for it: each started minute of a `completed` call.
    pub fn billable_minutes(&self) -> i64 {
        voice_minutes(self.duration_s.unwrap_or(0), self.status == "completed")
    }

    /// Its unit: the tier's minute.
    pub fn unit(&self) -> Unit {
        if self.tier == "premium" { Unit::VoiceMinutePremium } else { Unit::VoiceMinuteStandard }
    }

    /// What its minutes cost at `prices`, in millionths of a dollar (0 unless completed).
    pub fn cost_micros(&self, prices: &PriceList) -> i64 {
        prices.charge(self.unit().as_str(), self.billable_minutes()).cost_micros
    }

    /// The cursor of the page that ends with this call.
    pub fn cursor(&self) -> CallCursor {
        CallCursor { created_at: self.created_at, run_id: self.run_id.clone(), step_seq: self.step_seq }
    }
}

/// A workflow's runs in a window, by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Every run.
    pub total: i64,
    /// `succeeded`.
    pub succeeded: i64,
    /// `failed`.
    pub failed: i64,
    /// `cancelled`.
    pub cancelled: i64,
    /// `queued`, `running` or `waiting`.
    pub active: i64,
    /// The mean of `finished_at - started_at` (or `- created_at` for a run refused before it
    /// started) over ended runs, rounded to the millisecond; `None` when none ended.
    pub avg_duration_ms: Option<i64>,
}

/// One step of a workflow, over the executions of its runs in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCounts {
    /// The step's id.
    pub step_id: String,
    /// Its executions (a step run twice in one run, e.g. in a loop, counts twice).
    pub executions: i64,
    /// Executions that succeeded.
    pub succeeded: i64,
    /// Executions that failed, or whose outcome is unknown.
    pub failed: i64,
    /// The mean of `finished_at - started_at` over the executions that succeeded or failed,
    /// rounded to the millisecond; `None` when none did.
    pub avg_ms: Option<i64>,
}

/// How often calls of one step reached one node of its voice script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVisits {
    /// The `voice.call` step.
    pub step_id: String,
    /// The node's id (`#<index>` for a node without one).
    pub node_id: String,
    /// Every time a call ran it (a re-prompted menu counts each time).
    pub visits: i64,
}

/// A workflow's figures over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowCounts {
    /// Its runs.
    pub runs: RunCounts,
    /// Its steps, by step id.
    pub steps: Vec<StepCounts>,
    /// Node visits of its calls, by step id, then most visited first, then node id.
    pub nodes: Vec<NodeVisits>,
}

/// A workflow's runs on the dashboard.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct WorkflowRuns {
    /// The workflow.
    pub workflow_id: String,
    /// Its name (also a deleted workflow's); `None` if the account has no such workflow.
    pub name: Option<String>,
    /// Runs started in the window.
    pub runs: i64,
}

/// An account's figures of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCounts {
    /// Calls without a final status, placed within [`LONGEST_CALL_MS`] of now.
    pub active_calls: i64,
    /// Calls placed in the day.
    pub calls: i64,
    /// Of those, the ones `completed`.
    pub completed_calls: i64,
    /// Their `duration_s`, summed.
    pub completed_seconds: i64,
    /// Runs started in the day that succeeded.
    pub succeeded: i64,
    /// Runs started in the day that failed.
    pub failed: i64,
    /// Runs queued, running or waiting, whenever they started.
    pub runs_active: i64,
    /// The workflows with the most runs started in the day, at most [`TOP_WORKFLOWS`].
    pub top_workflows: Vec<WorkflowRuns>,
}

/// The local day containing `now` in `timezone` (UTC if unknown), as instants (ms):
/// `[midnight, next midnight)`. Where a day starts in a gap (a DST change at midnight), it
/// starts at the first local time that exists.
pub fn local_day_window(now: i64, timezone: &str) -> (i64, i64) {
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let today = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().with_timezone(&tz).date_naive();
    let start = |day: chrono::NaiveDate| -> i64 {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
        // A gap is at most a few hours: the first quarter hour that exists starts the day.
        (0..=24 * 4)
            .find_map(|quarter| tz.from_local_datetime(&(midnight + chrono::Duration::minutes(15 * quarter))).earliest())
            .map_or(now, |t| t.timestamp_millis())
    };
    let tomorrow = today.succ_opt().unwrap_or(today);
    (start(today), start(tomorrow))
}

/// `SUM(CASE WHEN <condition> THEN 1 ELSE 0 END)`, 0 over no rows.
fn count_when(condition: &str) -> String {
    format!("COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)")
}

/// `status IN (…)` of statuses spelled by their enums.
fn status_in(column: &str, statuses: &[&str]) -> String {
    let list: Vec<String> = statuses.iter().map(|s| format!("'{s}'")).collect();
    format!("{column} IN ({})", list.join(", "))
}

/// A rounded mean of `sum` over `n`, `None` when `n` is 0.
fn mean(sum: i64, n: i64) -> Option<i64> {
    (n > 0).then(|| (sum as f64 / n as f64).round() as i64)
}

/// Only `path` of a call's state (the voice module's `CallState`).
#[derive(Deserialize)]
struct CallPath {
    #[serde(default)]
    path: Vec<String>,
}

/// The states that end a run.
const ENDED: [RunStatus; 3] = [RunStatus::Succeeded, RunStatus::Failed, RunStatus::Cancelled];
/// The states of a run that goes on.
const ACTIVE: [RunStatus; 3] = [RunStatus::Queued, RunStatus::Running, RunStatus::Waiting];

impl Store {
    /// A page of an account's calls, newest first: at most `limit`, after `cursor`.
    pub async fn list_calls(&self, account_id: &str, f: &CallFilter, cursor: Option<&CallCursor>, limit: i64) -> Result<Vec<CallRecord>> {
        let sql = "SELECT c.run_id, c.step_seq, c.step_id, r.workflow_id, c.direction, c.from_number, c.to_number, c.tier, c.call_sid, c.status, \
                   c.answered_by, c.duration_s, c.recording_url, c.created_at \
                   FROM voice_calls c LEFT JOIN runs r ON r.id = c.run_id AND r.account_id = c.account_id \
                   WHERE c.account_id = $1 AND ($2 IS NULL OR c.created_at >= $2) AND ($3 IS NULL OR c.created_at < $3) \
                   AND ($4 IS NULL OR r.workflow_id = $4) AND ($5 IS NULL OR c.status = $5) \
                   AND ($6 IS NULL OR c.from_number = $6 OR c.to_number = $6) AND ($7 IS NULL OR c.direction = $7) \
                   AND ($8 IS NULL OR c.created_at < $8 OR (c.created_at = $8 AND (c.run_id < $9 OR (c.run_id = $9 AND c.step_seq < $10)))) \
                   ORDER BY c.created_at DESC, c.run_id DESC, c.step_seq DESC LIMIT $11";
        Ok(sqlx::query_as(sql)
            .bind(account_id)
            .bind(f.from)
            .bind(f.to)
            .bind(&f.workflow_id)
            .bind(&f.status)
            .bind(&f.number)
            .bind(&f.direction)
            .bind(cursor.map(|c| c.created_at))
            .bind(cursor.map(|c| c.run_id.as_str()))
            .bind(cursor.map(|c| c.step_seq))
            .bind(limit)
            .fetch_all(&self.reader)
            .await?)
    }

    /// A workflow's runs (test runs left out) started in `[from, to)`, their steps, and the
    /// nodes their calls visited. The caller checks that the workflow is the account's.
    pub async fn workflow_counts(&self, account_id: &str, workflow_id: &str, from: Option<i64>, to: Option<i64>) -> Result<WorkflowCounts> {
        const RUNS: &str = "r.account_id = $1 AND r.workflow_id = $2 AND r.is_test = 0 \
                            AND ($3 IS NULL OR r.created_at >= $3) AND ($4 IS NULL OR r.created_at < $4)";
        let ended = status_in("r.status", &ENDED.map(RunStatus::as_str));
        let sql = format!(
            "SELECT COUNT(*), {}, {}, {}, {}, \
             CAST(COALESCE(SUM(CASE WHEN {ended} AND r.finished_at IS NOT NULL THEN r.finished_at - COALESCE(r.started_at, r.created_at) END), 0) AS BIGINT), \
             {} FROM runs r WHERE {RUNS}",
            count_when(&format!("r.status = '{}'", RunStatus::Succeeded.as_str())),
            count_when(&format!("r.status = '{}'", RunStatus::Failed.as_str())),
            count_when(&format!("r.status = '{}'", RunStatus::Cancelled.as_str())),
            count_when(&status_in("r.status", &ACTIVE.map(RunStatus::as_str))),
            count_when(&format!("{ended} AND r.finished_at IS NOT NULL")),
        );
        let (total, succeeded, failed, cancelled, active, duration_sum, durations): (i64, i64, i64, i64, i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(workflow_id).bind(from).bind(to).fetch_one(&self.reader).await?;
        let runs = RunCounts { total, succeeded, failed, cancelled, active, avg_duration_ms: mean(duration_sum, durations) };

        let timed = format!(
            "{} AND s.started_at IS NOT NULL AND s.finished_at IS NOT NULL",
            status_in("s.status", &[StepStatus::Succeeded, StepStatus::Failed, StepStatus::OutcomeUnknown].map(StepStatus::as_str))
        );
        let sql = format!(
            "SELECT s.step_id, COUNT(*), {}, {}, CAST(COALESCE(SUM(CASE WHEN {timed} THEN s.finished_at - s.started_at END), 0) AS BIGINT), {} \
             FROM step_runs s JOIN runs r ON r.id = s.run_id WHERE {RUNS} GROUP BY s.step_id ORDER BY s.step_id",
            count_when(&format!("s.status = '{}'", StepStatus::Succeeded.as_str())),
            count_when(&status_in("s.status", &[StepStatus::Failed, StepStatus::OutcomeUnknown].map(StepStatus::as_str))),
            count_when(&timed),
        );
        let rows: Vec<(String, i64, i64, i64, i64, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(workflow_id).bind(from).bind(to).fetch_all(&self.reader).await?;
        let steps = rows
            .into_iter()
            .map(|(step_id, executions, succeeded, failed, sum, n)| StepCounts { step_id, executions, succeeded, failed, avg_ms: mean(sum, n) })
            .collect();

        // Paths are JSON in the call's state: read row by row, counted here.
        let sql = format!("SELECT c.step_id, c.state FROM voice_calls c JOIN runs r ON r.id = c.run_id WHERE c.account_id = $1 AND {RUNS}");
        let mut visits: HashMap<(String, String), i64> = HashMap::new();
        let mut rows =
            sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(workflow_id).bind(from).bind(to).fetch(&self.reader);
        while let Some((step_id, state)) = rows.try_next().await? {
            let Ok(CallPath { path }) = serde_json::from_str(&state) else {
                tracing::warn!(step_id, "a call's state does not read as a voice call state");
                continue;
            };
            for node_id in path {
                *visits.entry((step_id.clone(), node_id)).or_default() += 1;
            }
        }
        let mut nodes: Vec<NodeVisits> = visits.into_iter().map(|((step_id, node_id), visits)| NodeVisits { step_id, node_id, visits }).collect();
        nodes.sort_by(|a, b| a.step_id.cmp(&b.step_id).then(b.visits.cmp(&a.visits)).then(a.node_id.cmp(&b.node_id)));
        Ok(WorkflowCounts { runs, steps, nodes })
    }

    /// An account's figures of the window `[from, to)` (its day), with live ones as of `now`.
    /// Test runs are left out.
    pub async fn day_counts(&self, account_id: &str, from: i64, to: i64, now: i64) -> Result<DayCounts> {
        let completed = "c.status = 'completed'";
        let sql = format!(
            "SELECT COUNT(*), {}, CAST(COALESCE(SUM(CASE WHEN {completed} THEN c.duration_s END), 0) AS BIGINT) \
             FROM voice_calls c WHERE c.account_id = $1 AND c.created_at >= $2 AND c.created_at < $3",
            count_when(completed),
        );
        let (calls, completed_calls, completed_seconds): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(from).bind(to).fetch_one(&self.reader).await?;
        // Live calls are counted on their own: one placed before the day began may still be live.
        let (active_calls,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM voice_calls WHERE account_id = $1 AND ended = 0 AND created_at >= $2")
            .bind(account_id)
            .bind(now - LONGEST_CALL_MS)
            .fetch_one(&self.reader)
            .await?;

        let sql = format!(
            "SELECT {}, {} FROM runs r WHERE r.account_id = $1 AND r.is_test = 0 AND r.created_at >= $2 AND r.created_at < $3",
            count_when(&format!("r.status = '{}'", RunStatus::Succeeded.as_str())),
            count_when(&format!("r.status = '{}'", RunStatus::Failed.as_str())),
        );
        let (succeeded, failed): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).bind(from).bind(to).fetch_one(&self.reader).await?;
        let sql =
            format!("SELECT COUNT(*) FROM runs r WHERE r.account_id = $1 AND r.is_test = 0 AND {}", status_in("r.status", &ACTIVE.map(RunStatus::as_str)));
        let (runs_active,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(account_id).fetch_one(&self.reader).await?;
        // Count first, then name the few workflows (soft-deleted: names stay).
        let top_workflows = sqlx::query_as(
            "SELECT t.workflow_id, w.name, t.runs FROM \
             (SELECT workflow_id, COUNT(*) AS runs FROM runs WHERE account_id = $1 AND is_test = 0 AND created_at >= $2 AND created_at < $3 \
              GROUP BY workflow_id ORDER BY COUNT(*) DESC, workflow_id LIMIT $4) t \
             LEFT JOIN workflows w ON w.id = t.workflow_id AND w.account_id = $1 ORDER BY t.runs DESC, t.workflow_id",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .bind(TOP_WORKFLOWS)
        .fetch_all(&self.reader)
        .await?;
        Ok(DayCounts { active_calls, calls, completed_calls, completed_seconds, succeeded, failed, runs_active, top_workflows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    #[test]
    fn the_day_is_local_to_the_account() {
        let now = at("2026-12-04T23:30:00Z");
        assert_eq!(local_day_window(now, "UTC"), (at("2026-12-04T00:00:00Z"), at("2026-12-05T00:00:00Z")));
        // Already the 5th in Berlin, still the 4th in New York.
        assert_eq!(local_day_window(now, "Europe/Berlin"), (at("2026-12-05T00:00:00+01:00"), at("2026-12-06T00:00:00+01:00")));
        assert_eq!(local_day_window(now, "America/New_York"), (at("2026-12-04T00:00:00-05:00"), at("2026-12-05T00:00:00-05:00")));
        assert_eq!(local_day_window(now, "Not/AZone"), local_day_window(now, "UTC"), "an unknown zone is UTC");
    }

    #[test]
    fn days_across_dst_changes_are_23_or_25_hours() {
        let hour = 3_600_000;
        let (start, end) = local_day_window(at("2026-03-29T12:00:00+02:00"), "Europe/Berlin");
        assert_eq!((start, end - start), (at("2026-03-29T00:00:00+01:00"), 23 * hour));
        let (start, end) = local_day_window(at("2026-10-25T12:00:00+01:00"), "Europe/Berlin");
        assert_eq!((start, end - start), (at("2026-10-25T00:00:00+02:00"), 25 * hour));
        // Santiago springs forward at midnight: 2022-09-11 starts at 01:00 (-03:00).
        let (start, end) = local_day_window(at("2022-09-11T12:00:00-03:00"), "America/Santiago");
        assert_eq!((start, end), (at("2022-09-11T01:00:00-03:00"), at("2022-09-12T00:00:00-03:00")));
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = CallCursor { created_at: 1_800_000_000_123, run_id: "0190a1b2-run.with.dots".into(), step_seq: 3 };
        assert_eq!(CallCursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "x", "1.2", "1.2.", "a.2.r", "1.b.r", "9223372036854775808.1.r"] {
            assert_eq!(CallCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn minutes_and_cost_follow_status_and_tier() {
        let call = |status: &str, tier: &str, duration: Option<i64>| CallRecord {
            run_id: "r".into(),
            step_seq: 1,
            step_id: "phone".into(),
            workflow_id: Some("w".into()),
            direction: "outbound".into(),
            from_number: "+15550001111".into(),
            to_number: "+15552223333".into(),
            tier: tier.into(),
            call_sid: None,
            status: status.into(),
            answered_by: None,
            duration_s: duration,
            recording_url: None,
            created_at: 0,
        };
        let prices = PriceList::default();
        assert_eq!((call("completed", "standard", Some(75)).billable_minutes(), call("completed", "standard", Some(75)).cost_micros(&prices)), (2, 160_000));
        assert_eq!(call("completed", "premium", Some(61)).cost_micros(&prices), 700_000);
        assert_eq!(call("no-answer", "premium", Some(30)).cost_micros(&prices), 0);
        assert_eq!(call("in-progress", "standard", None).billable_minutes(), 0);
    }
}
