//! The state machine of a step execution: from how a step ended this time ([`Outcome`]) to what
//! its completion writes ([`Transition`]): the step's row, the run's new status and what is due
//! next. One pure function, [`transition`]: no I/O, no clock, no randomness (a retry's jittered
//! backoff is drawn by the caller), so its properties are tested below with proptest.
//!
//! The states are [`RunStatus`] and [`StepStatus`]; `docs/architecture.md` ("States of a run
//! and a step") draws them. The one rule applied inside the store's transaction, where a cancel
//! is discovered, is [`StepRow::after_cancel`]: cancel wins over a later completion.

use std::time::Duration;

use serde_json::{Value, json};

use crate::action::{ActionError, FailureClass};
use crate::metering::Usage;
use crate::status::{RunStatus, StepStatus};
use crate::store::{NewOutbox, NewWait, Next, Spawn, StepRow};

/// Where the run goes after a step failed for good: `Ok(Some(i))` on to step `i`, `Ok(None)` the
/// run succeeds (an `on_error: continue` at the end), `Err(())` the run fails.
pub(crate) type Then = std::result::Result<Option<usize>, ()>;

/// How a step ended this time.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Done; go on at `next` (`None`: the run succeeded).
    Succeeded { output: Value, usage: Vec<Usage>, next: Option<usize>, input: Option<Value> },
    /// Waiting until `until` (a delay, or a wait's timeout).
    Waiting { until: i64, wait: Option<NewWait>, output: Option<Value> },
    /// An action's attempt failed: retried after `backoff` if the error is retryable and fewer
    /// than `max_attempts` attempts were made, `outcome_unknown` if the request may have left,
    /// else failed for good (then `then`).
    ActionFailed { error: ActionError, then: Then, input: Option<Value>, max_attempts: u32, backoff: Duration },
    /// Failed for good, without an attempt to retry (a script, an input, a quota).
    Failed { error: ActionError, then: Then, input: Option<Value> },
    /// The request may have reached the vendor: do not resend.
    Unknown { error: ActionError, input: Option<Value> },
    /// Recorded in the outbox instead of sent (a sandbox connection or a test run); go on at
    /// `next`. Not billed.
    Sandboxed { output: Value, outbox: NewOutbox, next: Option<usize>, input: Value },
    /// The action accepted the work and finishes later: await a completion (a callback, or a
    /// poll once `check_after` has passed) with `handle` stored beside the step.
    Deferred { handle: Value, check_after: Duration, input: Option<Value> },
    /// Held by a vendor rate limit: wait for the reserved slot at `slot` (no attempt spent).
    RateLimited { slot: i64, key: String, input: Value },
    /// Due inside the quiet hours of the person it reaches: wait until `until`, the first
    /// minute they allow (no attempt spent; a test run goes on at once). `output` says so.
    QuietHours { until: i64, output: Value, input: Value },
    /// A `for_each` waits for its children (started now when `spawn` is given) until they have
    /// all ended, or until `until`, when it looks again. Never fast-forwarded: the children's
    /// end wakes it.
    Children { until: i64, spawn: Option<Spawn>, output: Value },
    /// Not sent on purpose (the recipient opted out): the step ends `skipped` with `output`,
    /// unbilled, and the run goes on at `next`.
    Skipped { output: Value, next: Option<usize>, input: Value },
    /// The lease was lost while executing: write nothing.
    LeaseLost,
}

/// The claimed step execution an outcome belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Position {
    /// The run.
    pub(crate) run_id: String,
    /// The step's id in the workflow.
    pub(crate) step_id: String,
    /// The step's index in the workflow.
    pub(crate) step_index: i64,
    /// The execution's sequence number in the run.
    pub(crate) step_seq: i64,
    /// Attempts already made before the one this outcome ends (the claim's; for the completion
    /// of a step awaiting one, the attempt that started it is this plus one).
    pub(crate) attempt: i64,
    /// Whether the step runs an action (only actions count attempts).
    pub(crate) is_action: bool,
    /// A test run: every wait (delay, wait timeout, retry backoff) is due at once.
    pub(crate) fast_forward: bool,
    /// When this execution started (ms).
    pub(crate) started: i64,
    /// Now (ms).
    pub(crate) now: i64,
    /// Until when the claim's lease is kept if the worker goes on at once.
    pub(crate) lease_until: i64,
}

/// What a completion writes.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    /// The step execution's row.
    pub(crate) step: StepRow,
    /// The run's new status.
    pub(crate) run_status: RunStatus,
    /// What is due next (a final run: nothing).
    pub(crate) next: Next,
    /// The run's failure envelope (JSON), when it failed.
    pub(crate) run_error: Option<String>,
    /// A wait to register.
    pub(crate) wait: Option<NewWait>,
    /// The output to make visible as `steps.<id>.output`.
    pub(crate) visible_output: Option<Value>,
    /// Units the step consumed (to price and bill).
    pub(crate) usage: Vec<Usage>,
    /// What a sandbox send would have sent.
    pub(crate) outbox: Option<NewOutbox>,
    /// The child runs a `for_each` starts.
    pub(crate) spawn: Option<Spawn>,
}

/// The failure envelope as stored: the error and the step it happened at.
pub(crate) fn error_json(error: &ActionError, step_id: &str) -> String {
    let mut v = serde_json::to_value(error).unwrap_or_default();
    v["step_id"] = json!(step_id);
    v.to_string()
}

/// From an outcome to what its completion writes; `None` when nothing may be written (the lease
/// was lost).
pub(crate) fn transition(at: &Position, outcome: Outcome) -> Option<Transition> {
    let now = at.now;
    let mut t = Transition {
        step: StepRow {
            run_id: at.run_id.clone(),
            seq: at.step_seq,
            step_id: at.step_id.clone(),
            status: StepStatus::Pending,
            attempts: if at.is_action { at.attempt + 1 } else { 1 },
            input: None,
            output: None,
            error: None,
            started_at: Some(at.started),
            finished_at: None,
            due_at: None,
            rate_slot_at: None,
            rate_slot_key: None,
            deferred_handle: None,
        },
        run_status: RunStatus::Running,
        next: Next::Finish,
        run_error: None,
        wait: None,
        visible_output: None,
        usage: Vec::new(),
        outbox: None,
        spawn: None,
    };
    // Go on with step `index` at once, under the same lease.
    let continue_at =
        |index: usize| Next::Continue { step_index: index as i64, step_seq: at.step_seq + 1, attempt: 0, due_at: now, keep_lease: Some(at.lease_until) };
    // The same step execution again at `due_at` (callers never pass a time before now); a test
    // run's at once.
    let again = |attempt: i64, due_at: i64, fast_forward: bool| Next::Continue {
        step_index: at.step_index,
        step_seq: at.step_seq,
        attempt,
        due_at: if fast_forward { now } else { due_at },
        keep_lease: fast_forward.then_some(at.lease_until),
    };
    let go_on = |next: Option<usize>| match next {
        Some(i) => (continue_at(i), RunStatus::Running),
        None => (Next::Finish, RunStatus::Succeeded),
    };
    let (next, run_status) = match outcome {
        Outcome::LeaseLost => return None,
        Outcome::Succeeded { output, usage, next, input } => {
            t.step.status = StepStatus::Succeeded;
            t.step.finished_at = Some(now);
            t.step.output = Some(output.to_string());
            t.step.input = input.map(|v| v.to_string());
            t.visible_output = Some(output);
            t.usage = usage;
            go_on(next)
        }
        Outcome::Sandboxed { output, outbox, next, input } => {
            t.step.status = StepStatus::Succeeded;
            t.step.finished_at = Some(now);
            t.step.output = Some(output.to_string());
            t.step.input = Some(input.to_string());
            t.visible_output = Some(output);
            t.outbox = Some(outbox);
            go_on(next)
        }
        Outcome::RateLimited { slot, key, input } => {
            let slot = slot.max(now);
            t.step.status = StepStatus::Throttled;
            t.step.attempts = at.attempt;
            t.step.due_at = Some(slot);
            t.step.rate_slot_at = Some(slot);
            t.step.rate_slot_key = Some(key);
            t.step.input = Some(input.to_string());
            (again(at.attempt, slot, false), RunStatus::Waiting)
        }
        Outcome::QuietHours { until, output, input } => {
            let until = until.max(now);
            t.step.status = StepStatus::Waiting;
            t.step.attempts = at.attempt;
            t.step.due_at = Some(until);
            t.step.output = Some(output.to_string());
            t.step.input = Some(input.to_string());
            (again(at.attempt, until, at.fast_forward), RunStatus::Waiting)
        }
        Outcome::Children { until, spawn, output } => {
            let until = until.max(now);
            t.step.status = StepStatus::Waiting;
            t.step.due_at = Some(until);
            t.step.output = Some(output.to_string());
            t.spawn = spawn;
            (again(1, until, false), RunStatus::Waiting)
        }
        Outcome::Skipped { output, next, input } => {
            t.step.status = StepStatus::Skipped;
            t.step.attempts = at.attempt;
            t.step.finished_at = Some(now);
            t.step.output = Some(output.to_string());
            t.step.input = Some(input.to_string());
            t.visible_output = Some(output);
            go_on(next)
        }
        Outcome::Deferred { handle, check_after, input } => {
            // The attempt was made (the vendor has the work); its outcome is what is awaited.
            // Its due time is the poll deadline; never fast-forwarded, a poll is a real call.
            let made = at.attempt + 1;
            let due_at = crate::clock::after(now, check_after);
            t.step.status = StepStatus::AwaitingCompletion;
            t.step.attempts = made;
            t.step.due_at = Some(due_at);
            t.step.deferred_handle = Some(handle.to_string());
            t.step.input = input.map(|v| v.to_string());
            (again(made, due_at, false), RunStatus::Waiting)
        }
        Outcome::Waiting { until, wait, output } => {
            let until = until.max(now);
            t.step.status = StepStatus::Waiting;
            t.step.due_at = Some(until);
            t.step.output = output.map(|v| v.to_string());
            // A test run: the delay is over and the wait timed out at once; no real event can
            // resume it (its wait is not registered).
            if !at.fast_forward {
                t.wait = wait;
            }
            (again(1, until, at.fast_forward), RunStatus::Waiting)
        }
        Outcome::ActionFailed { error, then, input, max_attempts, backoff } => {
            let made = at.attempt + 1;
            match error.class {
                FailureClass::Retryable if made < i64::from(max_attempts) => {
                    let due_at = crate::clock::after(now, backoff);
                    t.step.status = StepStatus::Pending;
                    t.step.due_at = Some(due_at);
                    t.step.error = Some(error_json(&error, &at.step_id));
                    t.step.input = input.map(|v| v.to_string());
                    (again(made, due_at, at.fast_forward), RunStatus::Waiting)
                }
                FailureClass::OutcomeUnknown => unknown(&mut t, at, &error, input),
                _ => failed(&mut t, at, &error, then, input, go_on),
            }
        }
        Outcome::Failed { error, then, input } => failed(&mut t, at, &error, then, input, go_on),
        Outcome::Unknown { error, input } => unknown(&mut t, at, &error, input),
    };
    t.next = next;
    t.run_status = run_status;
    Some(t)
}

fn failed(
    t: &mut Transition,
    at: &Position,
    error: &ActionError,
    then: Then,
    input: Option<Value>,
    go_on: impl Fn(Option<usize>) -> (Next, RunStatus),
) -> (Next, RunStatus) {
    t.step.status = StepStatus::Failed;
    t.step.finished_at = Some(at.now);
    t.step.error = Some(error_json(error, &at.step_id));
    t.step.input = input.map(|v| v.to_string());
    match then {
        Ok(next) => go_on(next),
        Err(()) => {
            t.run_error = t.step.error.clone();
            (Next::Finish, RunStatus::Failed)
        }
    }
}

fn unknown(t: &mut Transition, at: &Position, error: &ActionError, input: Option<Value>) -> (Next, RunStatus) {
    t.step.status = StepStatus::OutcomeUnknown;
    t.step.finished_at = Some(at.now);
    t.step.error = Some(error_json(error, &at.step_id));
    t.step.input = input.map(|v| v.to_string());
    t.run_error = t.step.error.clone();
    (Next::Finish, RunStatus::Failed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn position() -> impl Strategy<Value = Position> {
        (0..20i64, 1..50i64, 0..12i64, any::<bool>(), any::<bool>(), -1_000i64..1_000_000_000_000, 0..100_000i64).prop_map(
            |(step_index, step_seq, attempt, is_action, fast_forward, now, lease)| Position {
                run_id: "r".into(),
                step_id: "s".into(),
                step_index,
                step_seq,
                attempt,
                is_action,
                fast_forward,
                started: now - 5,
                now,
                lease_until: now + lease,
            },
        )
    }

    fn error() -> impl Strategy<Value = ActionError> {
        prop_oneof![
            Just(ActionError::retryable("flaky", "try again")),
            Just(ActionError::permanent("bad", "no")),
            Just(ActionError::outcome_unknown("timeout", "may have left")),
        ]
    }

    fn then() -> impl Strategy<Value = Then> {
        prop_oneof![Just(Err(())), Just(Ok(None)), (0..20usize).prop_map(|i| Ok(Some(i)))]
    }

    fn next() -> impl Strategy<Value = Option<usize>> {
        prop::option::of(0..20usize)
    }

    /// Any outcome but a lost lease, with times anywhere around now (even before it).
    fn outcome() -> impl Strategy<Value = Outcome> {
        let time = prop_oneof![any::<i64>(), -1_000i64..2_000_000_000_000];
        prop_oneof![
            next().prop_map(|next| Outcome::Succeeded { output: json!({"ok": 1}), usage: vec![], next, input: None }),
            (time.clone(), any::<bool>()).prop_map(|(until, w)| Outcome::Waiting { until, wait: w.then(|| NewWait { event_type: "e".into() }), output: None }),
            (error(), then(), 0..12u32, 0..10_000_000u64).prop_map(|(error, then, max_attempts, ms)| Outcome::ActionFailed {
                error,
                then,
                input: None,
                max_attempts,
                backoff: Duration::from_millis(ms),
            }),
            (error(), then()).prop_map(|(error, then)| Outcome::Failed { error, then, input: None }),
            error().prop_map(|error| Outcome::Unknown { error, input: None }),
            (time, "[a-z]{1,5}").prop_map(|(slot, key)| Outcome::RateLimited { slot, key, input: json!({}) }),
            (0..10_000_000u64).prop_map(|ms| Outcome::Deferred { handle: json!({"call_sid": "CA1"}), check_after: Duration::from_millis(ms), input: None }),
            any::<i64>().prop_map(|until| Outcome::QuietHours { until, output: json!({"deferred": "quiet_hours"}), input: json!({}) }),
            next().prop_map(|next| Outcome::Skipped { output: json!({"skipped": "opted_out"}), next, input: json!({}) }),
            any::<i64>().prop_map(|until| Outcome::Children { until, spawn: None, output: json!({"total": 3}) }),
        ]
    }

    fn due(next: &Next) -> Option<i64> {
        match next {
            Next::Continue { due_at, .. } => Some(*due_at),
            Next::Finish => None,
        }
    }

    proptest! {
        #[test]
        fn a_finished_run_never_gets_a_due_time(at in position(), o in outcome()) {
            let t = transition(&at, o).expect("not a lost lease");
            prop_assert_eq!(t.run_status.is_final(), t.next == Next::Finish, "{:?}", t);
            if t.run_status.is_final() {
                prop_assert_eq!(t.step.due_at, None);
                prop_assert!(t.step.status.is_final(), "{:?}", t.step.status);
            }
            prop_assert_eq!(t.step.status.is_final(), t.step.due_at.is_none(), "{:?}", t.step);
        }

        #[test]
        fn a_retry_never_exceeds_max_attempts(
            at in position(),
            error in error(),
            then in then(),
            max_attempts in 0..12u32,
            ms in 0..10_000_000u64,
        ) {
            let o = Outcome::ActionFailed { error, then, input: None, max_attempts, backoff: Duration::from_millis(ms) };
            let t = transition(&at, o).expect("not a lost lease");
            if t.step.status == StepStatus::Pending {
                prop_assert!(t.step.attempts < i64::from(max_attempts), "{:?}", t.step);
                match t.next {
                    Next::Continue { attempt, .. } => prop_assert!(attempt < i64::from(max_attempts)),
                    Next::Finish => prop_assert!(false, "a retry schedules the step again"),
                }
            }
        }

        #[test]
        fn cancel_wins_over_a_later_completion(at in position(), o in outcome(), later in 0..1_000_000i64) {
            let t = transition(&at, o).expect("not a lost lease");
            let cancelled = t.step.after_cancel(at.now + later);
            prop_assert!(cancelled.status.is_final(), "{:?}", cancelled);
            prop_assert_eq!(cancelled.due_at, None);
            prop_assert_eq!(cancelled.rate_slot_at, None);
            if t.step.status.is_final() {
                prop_assert_eq!(cancelled, t.step, "an outcome that happened is kept");
            } else {
                prop_assert_eq!(cancelled.status, StepStatus::Cancelled);
            }
        }

        #[test]
        fn nothing_is_ever_due_before_now(at in position(), o in outcome()) {
            let t = transition(&at, o).expect("not a lost lease");
            if let Some(due) = due(&t.next) {
                prop_assert!(due >= at.now, "due {} before now {}", due, at.now);
            }
            if let Some(due) = t.step.due_at {
                prop_assert!(due >= at.now, "step due {} before now {}", due, at.now);
            }
        }

        #[test]
        fn throttling_spends_no_attempt_and_keeps_its_slot(at in position(), slot in any::<i64>()) {
            let t = transition(&at, Outcome::RateLimited { slot, key: "k".into(), input: json!({}) }).unwrap();
            prop_assert_eq!(t.step.status, StepStatus::Throttled);
            prop_assert_eq!(t.step.attempts, at.attempt);
            prop_assert_eq!(t.step.rate_slot_at, t.step.due_at);
            prop_assert_eq!(t.step.output, None, "the slot is not in the output");
            prop_assert_eq!(t.run_status, RunStatus::Waiting);
        }
    }

    proptest! {
        #[test]
        fn quiet_hours_spend_no_attempt_and_never_move_a_step_earlier(at in position(), until in any::<i64>()) {
            let t = transition(&at, Outcome::QuietHours { until, output: json!({"deferred": "quiet_hours"}), input: json!({}) }).unwrap();
            prop_assert_eq!(t.step.status.public(), StepStatus::Waiting);
            prop_assert_eq!(t.step.attempts, at.attempt);
            prop_assert_eq!(t.step.due_at, Some(until.max(at.now)));
            prop_assert!(t.usage.is_empty() && t.outbox.is_none());
            match t.next {
                Next::Continue { step_seq, attempt, due_at, .. } => {
                    prop_assert_eq!((step_seq, attempt), (at.step_seq, at.attempt), "the same execution, again");
                    prop_assert_eq!(due_at, if at.fast_forward { at.now } else { until.max(at.now) });
                }
                Next::Finish => prop_assert!(false, "a deferred step comes back"),
            }
        }

        #[test]
        fn a_skipped_step_ends_unbilled_and_the_run_goes_on(at in position(), next in next()) {
            let t = transition(&at, Outcome::Skipped { output: json!({"skipped": "opted_out"}), next, input: json!({}) }).unwrap();
            prop_assert_eq!(t.step.status, StepStatus::Skipped);
            prop_assert!(t.step.status.is_final() && t.step.error.is_none() && t.run_error.is_none());
            prop_assert!(t.usage.is_empty() && t.outbox.is_none());
            prop_assert_eq!(t.run_status, if next.is_some() { RunStatus::Running } else { RunStatus::Succeeded });
        }

        #[test]
        fn a_deferred_step_waits_for_its_deadline_with_its_handle_out_of_the_output(at in position(), ms in 0..10_000_000u64) {
            let o = Outcome::Deferred { handle: json!({"call_sid": "CA1"}), check_after: Duration::from_millis(ms), input: None };
            let t = transition(&at, o).unwrap();
            prop_assert_eq!(t.step.status, StepStatus::AwaitingCompletion);
            prop_assert_eq!(t.step.status.public(), StepStatus::Waiting);
            prop_assert_eq!(t.step.due_at, Some(crate::clock::after(at.now, Duration::from_millis(ms))));
            prop_assert_eq!(t.step.deferred_handle.as_deref(), Some(r#"{"call_sid":"CA1"}"#));
            prop_assert_eq!(t.step.output, None, "the handle is not in the output");
            prop_assert!(t.usage.is_empty(), "nothing is billed before the completion");
            prop_assert_eq!(t.run_status, RunStatus::Waiting);
            prop_assert_eq!(t.step.attempts, at.attempt + 1);
            // The poll comes at the deadline even in a test run, and on the same attempt.
            prop_assert_eq!(&t.next, &Next::Continue {
                step_index: at.step_index,
                step_seq: at.step_seq,
                attempt: at.attempt + 1,
                due_at: t.step.due_at.unwrap(),
                keep_lease: None,
            });
        }

        #[test]
        fn a_completion_spends_no_further_attempt(at in position(), o in outcome()) {
            // A completion (callback or poll) is positioned one attempt back: the attempt it
            // completes was counted when the step started waiting.
            let waiting = transition(&at, Outcome::Deferred { handle: json!({}), check_after: Duration::ZERO, input: None }).unwrap();
            let completing = Position { attempt: waiting.step.attempts - 1, ..at.clone() };
            let t = transition(&completing, o).unwrap();
            if t.step.status != StepStatus::Throttled {
                prop_assert!(t.step.attempts <= waiting.step.attempts || !at.is_action, "{:?}", t.step);
            }
        }
    }

    #[test]
    fn a_lost_lease_writes_nothing() {
        let at = Position {
            run_id: "r".into(),
            step_id: "s".into(),
            step_index: 0,
            step_seq: 1,
            attempt: 0,
            is_action: true,
            fast_forward: false,
            started: 0,
            now: 0,
            lease_until: 10,
        };
        assert!(transition(&at, Outcome::LeaseLost).is_none());
    }
}
