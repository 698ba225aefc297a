//! The states of a run and of a step execution, as stored (`runs.status`, `step_runs.status`,
//! TEXT columns) and as the API shows them. The names here are the only place these strings
//! are spelled in Rust; SQL that filters on a state names it in a comment pointing here.
//!
//! sqlx's `#[derive(sqlx::Type)]` on an enum implements `Type`/`Decode` for PostgreSQL, SQLite
//! and MySQL only, not for the `Any` driver the store speaks, so both enums implement the `Any`
//! traits by hand, through `&str` (see [`text_column!`]).
//!
//! How the states follow each other is `engine::transition` (and `docs/architecture.md`,
//! "States of a run and a step").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Recorded, its first step not executed yet (also after `POST /v1/runs/{id}/retry`).
    Queued,
    /// Going on at once with its next step.
    Running,
    /// Its current step waits: a delay, a `wait_for`, a retry's backoff, a rate-limit slot or
    /// the completion of an action that finishes later.
    Waiting,
    /// Ended well. Final.
    Succeeded,
    /// Ended with an error (retryable by a person). Final.
    Failed,
    /// Cancelled by a person. Final.
    Cancelled,
}

/// A step execution's state (one row of `step_runs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// About to execute, or failed with attempts left and waiting for its retry (its `error`
    /// holds the last failure).
    Pending,
    /// An at-most-once action is sending.
    Running,
    /// Waiting for a time: a delay's end or a `wait_for`'s event or timeout.
    Waiting,
    /// Waiting for its vendor rate-limit slot (`step_runs.rate_slot_at`); no attempt spent.
    /// Shown as [`StepStatus::Waiting`] by the API (see [`StepStatus::public`]).
    Throttled,
    /// Its action accepted the work and finishes later (e.g. a call): waiting for a callback
    /// ([`crate::engine::Engine::complete_later`]) or, at its `due_at`, a poll. Its handle is in
    /// `step_runs.deferred_handle`. Shown as [`StepStatus::Waiting`] by the API.
    AwaitingCompletion,
    /// Ended well.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Its run was cancelled before it ended.
    Cancelled,
    /// The request may have reached the vendor; not sent again.
    OutcomeUnknown,
    /// Not sent, on purpose: the recipient opted out (`output.skipped` says why). The run goes on.
    Skipped,
}

/// A state name that is not one of the enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a known status")]
pub struct UnknownStatus(pub String);

impl RunStatus {
    /// Every run state.
    pub const ALL: [RunStatus; 6] = [Self::Queued, Self::Running, Self::Waiting, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Its stored and shown name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing follows it unless a person retries the run.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl StepStatus {
    /// Every step state.
    pub const ALL: [StepStatus; 10] = [
        Self::Pending,
        Self::Running,
        Self::Waiting,
        Self::Throttled,
        Self::AwaitingCompletion,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::OutcomeUnknown,
        Self::Skipped,
    ];

    /// Its stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Throttled => "throttled",
            Self::AwaitingCompletion => "awaiting_completion",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::OutcomeUnknown => "outcome_unknown",
            Self::Skipped => "skipped",
        }
    }

    /// Whether this execution of the step is over (nothing of it is due again).
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::OutcomeUnknown | Self::Skipped)
    }

    /// What the step becomes when its run was cancelled before its completion committed: cancel
    /// wins, so an execution that would go on (a retry, a wait) ends `cancelled`; one that ended
    /// keeps its outcome, which did happen.
    pub const fn after_cancel(self) -> Self {
        if self.is_final() { self } else { Self::Cancelled }
    }

    /// The state the API and live events show: the documented set, where a step throttled by a
    /// vendor rate limit is `waiting` (like a delay: it spent no attempt and goes on by itself
    /// at its `due_at`), with `output.rate_limited` saying why; so is a step awaiting the
    /// completion of an action that finishes later (its `due_at` is the poll deadline).
    pub const fn public(self) -> Self {
        match self {
            Self::Throttled | Self::AwaitingCompletion => Self::Waiting,
            other => other,
        }
    }
}

macro_rules! text_column {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownStatus(s.to_string()))
            }
        }

        impl sqlx::Type<sqlx::Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }

            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $t {
            fn encode_by_ref(&self, buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $t {
            fn decode(value: <sqlx::Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?.parse()?)
            }
        }
    };
}

text_column!(RunStatus);
text_column!(StepStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("retrying".parse::<StepStatus>().is_err());
    }

    #[test]
    fn the_api_never_shows_throttled() {
        assert!(StepStatus::ALL.iter().all(|s| !matches!(s.public(), StepStatus::Throttled | StepStatus::AwaitingCompletion)));
        assert_eq!(StepStatus::Throttled.public(), StepStatus::Waiting);
        assert_eq!(StepStatus::AwaitingCompletion.public(), StepStatus::Waiting);
        assert!(!StepStatus::AwaitingCompletion.is_final());
    }
}
