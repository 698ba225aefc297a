//! Live run events: what a dashboard watching runs is told as they change.
//!
//! Every committed state change of a run (accepted, a step ended or was rescheduled, the run
//! finished, was cancelled or re-run) is published as a [`RunEvent`] *after* its transaction
//! commits. Live events are a convenience, not a record: they may be lost (a process dies
//! between commit and publish, Redis restarts, a slow listener falls behind), and the store
//! stays the truth — a listener that reconnects reads the run again (`GET /v1/runs/{id}`, or the
//! snapshot the run stream starts with).
//!
//! [`LocalEventBus`] delivers within this process (the embedded default: one process serves the
//! API and runs the workers). Processes that share a database share events through Redis
//! pub/sub (`switchboard_integrations::live_events`). Both deliver through a [`Hub`]: one
//! broadcast channel per account with listeners in this process, so publishing for an account
//! nobody watches costs a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use crate::status::{RunStatus, StepStatus};

/// Events a listener may fall behind by before it is told it lagged.
const CHANNEL_CAPACITY: usize = 1024;

/// The longest [`Subscription::ready`] waits for a shared bus to confirm a subscription.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Step outputs larger than this (serialised) are left out of live events; the run's API has
/// them.
const MAX_LIVE_OUTPUT: usize = 8 * 1024;

/// One change of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunEvent {
    /// Unique, time-ordered (UUIDv7): the SSE `id`.
    pub id: String,
    /// `run.created`, `step.updated`, `run.finished` (succeeded, failed or cancelled),
    /// `run.retried`, or `call.updated` (a call of the run moved: a status, or the node the
    /// caller reached).
    #[serde(rename = "type")]
    pub kind: String,
    /// The account the run belongs to.
    pub account_id: String,
    /// The run.
    pub run_id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// The run's status after the change.
    pub run_status: RunStatus,
    /// The step that changed, for `step.updated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepEvent>,
    /// The call, for `call.updated`: `{call_sid, direction, from, to, status, node}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Value>,
    /// When the change was committed (RFC 3339).
    pub at: String,
}

/// A step's state in a [`RunEvent`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepEvent {
    /// The step's id in the workflow.
    pub id: String,
    /// Its position in the run's timeline.
    pub seq: i64,
    /// Its state as the API shows it ([`StepStatus::public`]): `succeeded`, `failed`,
    /// `outcome_unknown`, `skipped` (an opted-out recipient), `waiting` (a delay, a wait, a
    /// rate-limit slot or quiet hours), `pending` (a retry) or `running`.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When it is due again, for a waiting or pending step (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Its output, when small (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl RunEvent {
    /// A new event of `kind` for a run, committed at `now` (ms).
    pub fn new(kind: &str, account_id: &str, run_id: &str, workflow_id: &str, run_status: RunStatus, now: i64) -> Self {
        Self {
            id: crate::engine::new_id(),
            kind: kind.to_string(),
            account_id: account_id.to_string(),
            run_id: run_id.to_string(),
            workflow_id: workflow_id.to_string(),
            run_status,
            step: None,
            call: None,
            at: crate::clock::to_rfc3339(now),
        }
    }

    /// Whether this event ends its run's story (nothing follows it unless a person re-runs it).
    pub fn is_final(&self) -> bool {
        self.kind == "run.finished"
    }
}

impl StepEvent {
    /// From a step row as committed (its JSON columns as stored).
    pub(crate) fn from_row(step: &crate::store::StepRow) -> Self {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        Self {
            id: step.step_id.clone(),
            seq: step.seq,
            status: step.status.public(),
            attempts: step.attempts,
            due_at: step.due_at.map(crate::clock::to_rfc3339),
            output: match step.status {
                // Why it waits, from its slot columns (see `StepRow::public_output`).
                StepStatus::Throttled => Some(step.public_output()),
                _ => step.output.as_ref().filter(|o| o.len() <= MAX_LIVE_OUTPUT).and_then(|o| serde_json::from_str(o).ok()),
            },
            error: parse(&step.error),
        }
    }
}

/// Where live events go and where listeners get them.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes a committed change. Never blocks and never fails: an event that cannot be
    /// delivered is dropped (see the module docs).
    fn publish(&self, event: RunEvent);

    /// Listens to an account's events (from every process sharing the bus).
    fn subscribe(&self, account_id: &str) -> Subscription;

    /// Whether an event of the account could reach anyone: when not, the engine does not build
    /// it (the step path pays nothing for events nobody watches). A shared bus cannot know who
    /// listens in other processes, so by default: yes.
    fn wants(&self, _account_id: &str) -> bool {
        true
    }

    /// Where events travel, for readiness reports: `in_process`, `redis`, or
    /// `in_process_fallback` while a shared backend is unreachable.
    fn status(&self) -> &'static str {
        "in_process"
    }
}

/// A listener's end: the account's events, from when it subscribed.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<RunEvent>>,
    subscribed: watch::Receiver<bool>,
    hub: Arc<Hub>,
    account_id: String,
}

impl Subscription {
    /// Waits until events from other processes reach this subscription (a shared bus
    /// subscribes in the background), for at most a second; at once in process, or when the
    /// shared bus is away. Read state the listener must not miss changes to *after* this.
    pub async fn ready(&mut self) {
        let _ = tokio::time::timeout(READY_TIMEOUT, self.subscribed.wait_for(|s| *s)).await;
    }

    /// The next event; `Err(Lagged(n))` when the listener fell `n` events behind (they are
    /// gone), `Err(Closed)` never while the bus lives.
    pub async fn recv(&mut self) -> Result<Arc<RunEvent>, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(&self.account_id);
    }
}

/// Which accounts a process listens to, and their channels. A shared bus learns through
/// [`Hub::with_interest`] when an account gains its first or loses its last listener here, so
/// it receives only the accounts someone in this process watches.
#[derive(Debug, Default)]
pub struct Hub {
    accounts: Mutex<HashMap<String, Channel>>,
    interest: Option<mpsc::UnboundedSender<Interest>>,
}

/// An account's channel in a process: its listeners, and whether the shared bus confirmed the
/// subscription.
#[derive(Debug)]
struct Channel {
    sender: broadcast::Sender<Arc<RunEvent>>,
    subscribed: watch::Receiver<bool>,
    /// Subscriptions alive, counted under the hub's lock (a receiver count would still include
    /// a receiver being dropped on another thread).
    listeners: usize,
}

/// A change in which accounts a process listens to.
#[derive(Debug)]
pub enum Interest {
    /// The account's first listener in this process arrived; send `true` once subscribed
    /// (dropping the sender releases waiting listeners too).
    Watch(String, watch::Sender<bool>),
    /// Its last listener left.
    Unwatch(String),
}

impl Hub {
    /// A hub that tells `interest` when an account is first watched and last left.
    pub fn with_interest(interest: mpsc::UnboundedSender<Interest>) -> Self {
        Self { accounts: Mutex::default(), interest: Some(interest) }
    }

    /// A new listener for an account.
    pub fn subscribe(self: &Arc<Self>, account_id: &str) -> Subscription {
        let mut accounts = self.accounts.lock().expect("hub lock");
        let channel = accounts.entry(account_id.to_string()).or_insert_with(|| {
            let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
            // In process there is nothing to wait for.
            let (confirm, subscribed) = watch::channel(self.interest.is_none());
            if let Some(tx) = &self.interest {
                let _ = tx.send(Interest::Watch(account_id.to_string(), confirm));
            }
            Channel { sender, subscribed, listeners: 0 }
        });
        channel.listeners += 1;
        Subscription { receiver: channel.sender.subscribe(), subscribed: channel.subscribed.clone(), hub: self.clone(), account_id: account_id.to_string() }
    }

    fn leave(&self, account_id: &str) {
        let mut accounts = self.accounts.lock().expect("hub lock");
        let Some(channel) = accounts.get_mut(account_id) else { return };
        channel.listeners -= 1;
        if channel.listeners == 0 {
            accounts.remove(account_id);
            if let Some(tx) = &self.interest {
                let _ = tx.send(Interest::Unwatch(account_id.to_string()));
            }
        }
    }

    /// Hands an event to this process's listeners of its account (if any).
    pub fn deliver(&self, event: Arc<RunEvent>) {
        if let Some(channel) = self.accounts.lock().expect("hub lock").get(&event.account_id) {
            let _ = channel.sender.send(event);
        }
    }

    /// Whether anyone in this process listens to the account.
    pub fn is_watched(&self, account_id: &str) -> bool {
        self.accounts.lock().expect("hub lock").contains_key(account_id)
    }

    /// The accounts watched in this process (to subscribe again after a reconnect).
    pub fn watched(&self) -> Vec<String> {
        self.accounts.lock().expect("hub lock").keys().cloned().collect()
    }
}

/// Live events within this process.
#[derive(Debug, Default)]
pub struct LocalEventBus {
    hub: Arc<Hub>,
}

impl LocalEventBus {
    /// A bus with no listeners yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl EventBus for LocalEventBus {
    fn publish(&self, event: RunEvent) {
        self.hub.deliver(Arc::new(event));
    }

    fn subscribe(&self, account_id: &str) -> Subscription {
        self.hub.subscribe(account_id)
    }

    fn wants(&self, account_id: &str) -> bool {
        self.hub.is_watched(account_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(account: &str, run: &str) -> RunEvent {
        RunEvent::new("run.created", account, run, "w", RunStatus::Queued, 0)
    }

    #[tokio::test]
    async fn listeners_get_their_accounts_events_only() {
        let bus = LocalEventBus::new();
        let mut a = bus.subscribe("a");
        let mut b = bus.subscribe("b");
        bus.publish(event("a", "r1"));
        bus.publish(event("b", "r2"));
        assert_eq!(a.recv().await.unwrap().run_id, "r1");
        assert_eq!(b.recv().await.unwrap().run_id, "r2");
        assert!(a.receiver.try_recv().is_err(), "a saw b's event");
    }

    #[tokio::test]
    async fn interest_follows_first_and_last_listener() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub::with_interest(tx));
        let mut first = hub.subscribe("a");
        let mut second = hub.subscribe("a");
        let Ok(Interest::Watch(account, confirm)) = rx.try_recv() else { panic!("no watch") };
        assert_eq!(account, "a");
        assert!(rx.try_recv().is_err(), "a second listener is not news");
        assert!(!*first.subscribed.borrow(), "not ready before the bus confirms");
        confirm.send_replace(true);
        first.ready().await;
        second.ready().await;
        drop(first);
        assert!(rx.try_recv().is_err(), "one listener is left");
        assert_eq!(hub.watched(), vec!["a".to_string()]);
        drop(second);
        assert!(matches!(rx.try_recv(), Ok(Interest::Unwatch(a)) if a == "a"));
        assert!(hub.watched().is_empty());
        // Publishing for nobody is a no-op.
        hub.deliver(Arc::new(event("a", "r")));
    }
}
