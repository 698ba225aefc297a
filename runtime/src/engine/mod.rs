//! The engine: turns accepted events into runs and executes claimed steps.
//!
//! A step moves like this: an event is committed together with its runs and their queue rows
//! (due now) → a worker claims due rows (`Store::claim`, which leases them) → [`Engine::process`]
//! executes the step and commits its outcome, the run's new state, the next due time and the
//! usage rows in one transaction (`Store::complete`) → if the next step is due at once, the same
//! worker goes on with it under the same lease; otherwise the row waits in the store until due.
//! A step whose action finishes later waits `awaiting_completion` until a callback
//! ([`Engine::complete_later`]) or a poll at its deadline completes it (see `later`).

mod batch;
mod commit;
mod connections;
mod execute;
mod ingest;
mod later;
mod schedules;
mod step;
mod transition;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

pub use connections::ConnectionChoice;
pub use ingest::{EventAccepted, HookAccepted};
pub use later::LaterCompletion;

use crate::action::ActionRegistry;
use crate::clock::Clock;
use crate::definition::{self, Problem, SharedWorkflow};
use crate::events::{EventBus, LocalEventBus};
use crate::expr::ExprEngine;
use crate::metering::PriceList;
use crate::ratelimit::{LocalRateLimiter, RateLimiter};
use crate::store::{Account, Claim, Completion, NewEvent, NewRun, RunRow, Store};
use crate::{Error, Result};
use batch::GroupCommit;

/// How long an account (timezone, plan) may be served from memory; a plan change made by
/// another process is seen within this time.
const ACCOUNT_TTL: Duration = Duration::from_secs(5);

/// The most compiled workflow versions, and accounts, kept in memory. Past it an arbitrary entry
/// makes room: the caches only save reads, so what they hold is bounded, not chosen.
const CACHE_ENTRIES: usize = 2_048;

/// What a group commit of accepted events answers each request: `Err((database unreachable,
/// message))` when the batch failed.
type AcceptResult = std::result::Result<(), (bool, String)>;

/// An accepted event as the group commit takes it: the event, its runs, their hand-offs.
type Accepted = (NewEvent, Vec<NewRun>, Vec<worker::HandOff>);

/// The most items one group commit takes.
const MAX_GROUP: usize = 256;

/// Writer tasks per group-commit queue, on both databases. SQLite has one writer connection.
/// On PostgreSQL more writers overlap commits but make smaller batches, and a batch costs the
/// database much the same whatever its size. Under `wrk` against `serve` with the workers on,
/// accept / completion writers 1/1, 2/1, 3/1 and 2/2 took 10,370, 10,140, 10,060 and 9,410
/// webhooks/s; in the bench, one writer each took ingest from 0.51× to 0.55× of pgbench and
/// one-step runs from 7,053 to 8,345 steps/s, and 10-step runs from 14,954 to 13,593 steps/s
/// (docs/performance.md).
const GROUP_WRITERS: usize = 1;

/// Inserts into a bounded cache, evicting an arbitrary entry when it is full.
fn insert_bounded<K: std::hash::Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= CACHE_ENTRIES
        && !map.contains_key(&key)
        && let Some(victim) = map.keys().next().cloned()
    {
        map.remove(&victim);
    }
    map.insert(key, value);
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim is held before another worker may take the step over.
    pub lease: Duration,
    /// Steps claimed per query.
    pub batch: i64,
    /// Steps executed at once per process.
    pub concurrency: usize,
    /// The longest an idle worker sleeps before looking for due work again.
    pub poll_interval: Duration,
    /// Prices of usage units.
    pub prices: PriceList,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { lease: Duration::from_secs(60), batch: 64, concurrency: 128, poll_interval: Duration::from_secs(1), prices: PriceList::default() }
    }
}

/// The engine. Share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    actions: ActionRegistry,
    expr: ExprEngine,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// Compiled workflow versions; versions are immutable, so entries never go stale.
    workflows: Mutex<HashMap<(String, i64), SharedWorkflow>>,
    /// Accounts, briefly cached (timezone and plan); see [`ACCOUNT_TTL`].
    accounts: Mutex<HashMap<String, (Account, std::time::Instant)>>,
    /// Wakes idle workers when work is committed in this process.
    wake: Notify,
    /// Group commit of accepted events, started on first use.
    accepts: std::sync::OnceLock<GroupCommit<Accepted, AcceptResult>>,
    /// Group commit of step completions, started on first use.
    completions: std::sync::OnceLock<GroupCommit<Arc<Completion>, Result<bool>>>,
    /// While this process's workers run: their queue of accepted runs handed over in memory
    /// (see `worker`).
    handoff: Mutex<Option<worker::HandOffQueue>>,
    /// Vendor rate limits (in this process unless a shared limiter is set).
    limiter: Arc<dyn RateLimiter>,
    /// Live run events (in this process unless a shared bus is set).
    events: Arc<dyn EventBus>,
}

impl Engine {
    /// A new engine over a migrated store.
    pub fn new(store: Store, actions: ActionRegistry, clock: Arc<dyn Clock>, config: EngineConfig) -> Self {
        Self {
            store,
            actions,
            expr: ExprEngine::new(),
            clock,
            config,
            workflows: Mutex::default(),
            accounts: Mutex::default(),
            wake: Notify::new(),
            accepts: std::sync::OnceLock::new(),
            completions: std::sync::OnceLock::new(),
            handoff: Mutex::default(),
            limiter: Arc::new(LocalRateLimiter::new()),
            events: Arc::new(LocalEventBus::new()),
        }
    }

    /// Where vendor rate limits are kept (see [`RateLimiter::status`]).
    pub fn rate_limit_status(&self) -> &'static str {
        self.limiter.status()
    }

    /// Uses `limiter` for vendor rate limits (e.g. one shared through Redis by every process).
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Publishes live run events on `events` (e.g. a bus shared through Redis by every process).
    pub fn with_events(mut self, events: Arc<dyn EventBus>) -> Self {
        self.events = events;
        self
    }

    /// The live run events.
    pub fn events(&self) -> &Arc<dyn EventBus> {
        &self.events
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The action registry.
    pub fn actions(&self) -> &ActionRegistry {
        &self.actions
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Validates and compiles a workflow document.
    pub fn compile(&self, doc: &Value) -> Result<definition::Workflow, Vec<Problem>> {
        definition::validate(doc, &self.actions, &self.expr)
    }

    /// A compiled workflow version, from the cache or the store.
    pub async fn workflow(&self, workflow_id: &str, version: i64) -> Result<SharedWorkflow> {
        let key = (workflow_id.to_string(), version);
        if let Some(w) = self.workflows.lock().expect("cache lock").get(&key) {
            return Ok(w.clone());
        }
        let source = self.store.workflow_version(workflow_id, version).await?.ok_or(Error::NotFound("workflow version"))?;
        let doc: Value = serde_json::from_str(&source)?;
        let compiled = Arc::new(self.compile(&doc).map_err(Error::Invalid)?);
        insert_bounded(&mut self.workflows.lock().expect("cache lock"), key, compiled.clone());
        Ok(compiled)
    }

    /// The steps a run executes: its workflow version's, or for a `for_each` child, the steps
    /// of its parent's `for_each` (`context.each.step` names which).
    pub async fn run_workflow(&self, run: &RunRow) -> Result<SharedWorkflow> {
        let workflow = self.workflow(&run.workflow_id, run.version).await?;
        if run.parent_run_id.is_none() {
            return Ok(workflow);
        }
        let context: Value = serde_json::from_str(&run.context)?;
        let index = context.pointer("/each/step").and_then(Value::as_u64).unwrap_or(u64::MAX) as usize;
        match workflow.steps.get(index).map(|s| &s.kind) {
            Some(crate::definition::StepKind::ForEach(f)) => Ok(f.body.clone()),
            _ => Err(Error::Invalid(vec![Problem {
                path: format!("steps[{index}]"),
                message: "this child run's for_each step is not in its workflow version".into(),
            }])),
        }
    }

    async fn account(&self, id: &str) -> Result<Account> {
        if let Some((a, at)) = self.accounts.lock().expect("cache lock").get(id)
            && at.elapsed() < ACCOUNT_TTL
        {
            return Ok(a.clone());
        }
        let account = self.store.account(id).await?.ok_or(Error::NotFound("account"))?;
        insert_bounded(&mut self.accounts.lock().expect("cache lock"), id.to_string(), (account.clone(), std::time::Instant::now()));
        Ok(account)
    }

    /// Drops a cached account (its plan changed through this process).
    pub fn forget_account(&self, id: &str) {
        self.accounts.lock().expect("cache lock").remove(id);
    }

    /// Records an accepted event and its runs through the group commit; returns once they are
    /// committed. The writer sends the runs' hand-offs ([`Engine::hand_off`]) once they are
    /// committed, whether or not the caller still waits (a client that hangs up must not leave
    /// a leased run behind).
    pub(crate) async fn record_accepted(&self, event: NewEvent, runs: Vec<NewRun>, handoffs: Vec<worker::HandOff>) -> Result<()> {
        let accepts = self.accepts.get_or_init(|| {
            let store = self.store.clone();
            GroupCommit::start(GROUP_WRITERS, MAX_GROUP, move |items: Vec<Accepted>| {
                let store = store.clone();
                async move {
                    let (records, handoffs): (Vec<_>, Vec<_>) = items.into_iter().map(|(event, runs, handoffs)| ((event, runs), handoffs)).unzip();
                    let result = store.record_batch(&records).await.map_err(|e| (e.is_unavailable(), e.to_string()));
                    match &result {
                        Ok(()) => {
                            for (permit, job, _ticket) in handoffs.into_iter().flatten() {
                                permit.send(job);
                            }
                        }
                        // Dropping the hand-offs frees their room; their runs were not written.
                        Err(e) => tracing::error!(error = %e.1, events = records.len(), "group commit failed"),
                    }
                    vec![result; records.len()]
                }
            })
        });
        match accepts.submit((event, runs, handoffs)).await {
            Some(result) => result.map_err(|(unavailable, message)| if unavailable { Error::Unavailable(message) } else { Error::Batch(message) }),
            None => Err(Error::Batch("the writer stopped".into())),
        }
    }

    /// Commits a step's completion through the group commit ([`Store::complete_batch`]):
    /// returns once it is committed, with [`Store::complete`]'s answer.
    pub(crate) async fn complete(&self, completion: Arc<Completion>) -> Result<bool> {
        let completions = self.completions.get_or_init(|| {
            let store = self.store.clone();
            GroupCommit::start(GROUP_WRITERS, MAX_GROUP, move |batch: Vec<Arc<Completion>>| {
                let store = store.clone();
                async move {
                    let refs: Vec<&Completion> = batch.iter().map(|c| &**c).collect();
                    match store.complete_batch(&refs).await {
                        Ok(done) => done,
                        Err(e) if batch.len() == 1 => vec![Err(e)],
                        Err(e) => {
                            // One bad completion must not fail the others: each alone.
                            tracing::warn!(error = %e, completions = batch.len(), "group commit of completions failed; committing each alone");
                            let mut done = Vec::with_capacity(batch.len());
                            for c in &refs {
                                done.push(store.complete(c).await);
                            }
                            done
                        }
                    }
                }
            })
        });
        match completions.submit(completion.clone()).await {
            Some(result) => result,
            // The writers' runtime is gone (a shutdown): commit directly.
            None => self.store.complete(&completion).await,
        }
    }

    /// Tells idle workers in this process that work was committed.
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// Claims and executes up to `limit` due steps, one after another. Returns how many claims
    /// it processed. This is the single step tests drive; workers run it concurrently.
    pub async fn process_due(&self, limit: i64) -> Result<usize> {
        let token = new_token();
        let now = self.clock.now();
        let claims = self.store.claim(&token, now, crate::clock::after(now, self.config.lease), limit).await?;
        let n = claims.len();
        for claim in claims {
            self.process(&token, claim).await?;
        }
        Ok(n)
    }

    /// Runs [`Engine::process_due`] until nothing is due (tests).
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.process_due(self.config.batch).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Executes one run's steps as they fall due until it ends, for at most `budget` (a test
    /// run, whose waits are fast-forwarded, ends within milliseconds; a worker may take a step of
    /// it meanwhile, which is fine: it runs the same code). Returns whether the run ended.
    pub async fn drive_run(&self, run_id: &str, budget: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + budget;
        loop {
            let token = new_token();
            let now = self.clock.now();
            // A fan-out's children first: the run waits for them.
            for child in self.store.queued_children(run_id).await? {
                let token = new_token();
                if let Some(claim) = self.store.claim_run(&token, &child, now, crate::clock::after(now, self.config.lease)).await? {
                    self.process(&token, claim).await?;
                }
            }
            if let Some(claim) = self.store.claim_run(&token, run_id, now, crate::clock::after(now, self.config.lease)).await? {
                self.process(&token, claim).await?;
                continue;
            }
            let Some(run) = self.store.run_by_id(run_id).await? else { return Ok(false) };
            if run.status.is_final() {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Executes a claimed step (and the steps after it that are due at once).
    pub async fn process(&self, token: &str, claim: Claim) -> Result<()> {
        self.process_run(token, claim, None).await
    }

    /// [`Engine::process`] with the run's row when the caller read it already (a worker reads
    /// the rows of a claimed batch at once).
    pub(crate) async fn process_run(&self, token: &str, claim: Claim, run: Option<RunRow>) -> Result<()> {
        use tracing::Instrument;
        let span = tracing::info_span!("run", run_id = %claim.run_id);
        step::process(self, token, claim, run).instrument(span).await
    }
}

/// A fresh random token or id (UUIDv7: time-ordered, so ids sort by creation).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}
