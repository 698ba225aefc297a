//! Workers on apalis. apalis runs the workers (concurrency limit, panic catching, tracing,
//! graceful shutdown); the store feeds them. Our apalis backend is a [`CustomBackend`] whose
//! fetcher claims due steps from the store, so apalis never holds a delay or a retry: a task it
//! holds is a leased queue row, and if the process dies the lease expires and the row is due
//! again for any worker.
//!
//! A run accepted by this process while its workers run skips the claim: it is recorded with
//! its first step already leased (see [`Engine::hand_off`]) and handed to the fetcher in memory,
//! run row and all. The hand-off queue is bounded; when it is full, runs are recorded due now and
//! claimed like any other. Its rows are leased like claimed ones, so a crash loses nothing: the
//! lease expires and any worker claims them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BackendBuilder, BoxDynError, Data, Task, TaskBuilder, TaskId, WorkerBuilder, WorkerBuilderExt};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::{Engine, new_token};
use crate::status::RunStatus;
use crate::store::{Claim, NewEvent, NewRun, RunRow};

/// A hand-off reserved for a run being recorded, what to send once it is committed, and a
/// ticket that tells the shutdown it is still outstanding.
pub(super) type HandOff = (mpsc::OwnedPermit<StepJob>, StepJob, Arc<()>);

/// This process's workers' hand-off queue while they run.
#[derive(Debug)]
pub(super) struct HandOffQueue {
    sender: mpsc::Sender<StepJob>,
    /// The lease token of every run handed off (a run's fence is its id and token).
    token: String,
    /// Cloned into each hand-off until it is sent or dropped.
    ticket: Arc<()>,
}

/// The lease tokens of this process's fetcher's claims within the last lease (older ones have
/// expired): at shutdown, once no step is in flight, any queue row still holding one of them (or
/// the hand-off token) was taken and never started, wherever it sat (the fetcher's buffer, the
/// hand-off queue, apalis, a claim cut off mid-way), and is given back.
struct Leases {
    lease: Duration,
    held: std::sync::Mutex<VecDeque<(String, Instant)>>,
}

impl Leases {
    fn new(lease: Duration) -> Self {
        Self { lease, held: std::sync::Mutex::default() }
    }

    fn add(&self, token: &str) {
        let mut held = self.held.lock().expect("leases lock");
        while held.front().is_some_and(|(_, at)| at.elapsed() > self.lease) {
            held.pop_front();
        }
        held.push_back((token.to_string(), Instant::now()));
    }

    fn tokens(&self) -> Vec<String> {
        self.held.lock().expect("leases lock").iter().map(|(t, _)| t.clone()).collect()
    }
}

/// One claimed step: what an apalis task carries (ids, not models).
#[derive(Debug, Clone)]
pub struct StepJob {
    /// The claimed queue row.
    pub claim: Claim,
    /// The claim's lease token.
    pub token: String,
    /// The run's row, read with the rest of the claimed batch (`None`: read it when processing).
    pub run: Option<RunRow>,
}

impl Engine {
    /// Leases the first step of each of `runs` (not test runs) for this process's workers, as
    /// far as their hand-off queue has room; [`Engine::record_accepted`] records the runs and
    /// its writer sends each returned job once they are committed. Nothing when no workers run
    /// here.
    pub(super) fn hand_off(&self, event: &NewEvent, runs: &mut [NewRun]) -> Vec<HandOff> {
        let Some((sender, token, ticket)) = self.handoff.lock().expect("hand-off lock").as_ref().map(|q| (q.sender.clone(), q.token.clone(), q.ticket.clone()))
        else {
            return Vec::new();
        };
        let lease_until = crate::clock::after(event.now, self.config.lease);
        let mut out = Vec::new();
        for run in runs.iter_mut().filter(|r| !r.is_test) {
            let Ok(permit) = sender.clone().try_reserve_owned() else { break };
            let token = token.clone();
            run.lease = Some((token.clone(), lease_until));
            let claim = Claim { run_id: run.id.clone(), step_index: 0, step_seq: 1, attempt: 0, dispatching: 0, reserved_milli: 0, reserved_period: None };
            // The row as recorded (`runs::insert_runs`).
            let row = RunRow {
                id: run.id.clone(),
                account_id: event.account_id.clone(),
                workflow_id: run.workflow_id.clone(),
                version: run.version,
                status: RunStatus::Queued,
                event_id: event.id.clone(),
                event: run.event.clone(),
                context: "{}".into(),
                error: None,
                is_test: 0,
                step_index: 0,
                step_seq: 1,
                created_at: event.now,
                started_at: None,
                finished_at: None,
                parent_run_id: None,
                parent_seq: None,
                item_index: None,
            };
            out.push((permit, StepJob { claim, token, run: Some(row) }, ticket.clone()));
        }
        out
    }
}

/// Claimed and handed-off steps not yet given to apalis (a shutdown gives them back: see
/// [`give_back`]).
struct Buffer {
    engine: Arc<Engine>,
    jobs: VecDeque<StepJob>,
    /// Runs accepted by this process, their first step leased already.
    handed: mpsc::Receiver<StepJob>,
    /// When the store was last asked for due steps.
    claimed_at: Instant,
    /// Whether the store may have due steps now (a wake-up, a due time, a full claim).
    ask_store: bool,
    /// Until when the store has nothing due, as of the last empty claim.
    idle_until: Instant,
    /// Whether the fetcher woke for a hand-off since it last asked the store.
    handed_since_claim: bool,
    /// The lease tokens taken (shared with the shutdown).
    leases: Arc<Leases>,
}

impl Buffer {
    fn new(engine: Arc<Engine>, handed: mpsc::Receiver<StepJob>, leases: Arc<Leases>) -> Self {
        let now = Instant::now();
        Self { engine, jobs: VecDeque::new(), handed, claimed_at: now, ask_store: true, idle_until: now, handed_since_claim: false, leases }
    }
}

/// How often a fetcher busy with hand-offs still claims due steps from the store: what it adds
/// to a due timer's lateness under a flood of webhooks, at most.
const STORE_CLAIM_EVERY: Duration = Duration::from_millis(20);

/// Waits for the next due step and claims a batch. Never yields "nothing": an idle worker sleeps
/// until the earliest due time, a local wake-up, or the poll interval, whichever comes first.
async fn next_job(mut buffer: Buffer) -> (StepJob, Buffer) {
    loop {
        if let Some(job) = buffer.jobs.pop_front() {
            return (job, buffer);
        }
        let engine = buffer.engine.clone();
        // Runs handed off by this process first, then whatever the store has due. The store is
        // asked when it may have work (a wake-up, a due time, a full claim) and, while hand-offs
        // keep coming, at least every `STORE_CLAIM_EVERY`: neither a flood of webhooks nor a
        // backlog of due timers starves the other.
        while buffer.jobs.len() < engine.config.batch as usize
            && let Ok(job) = buffer.handed.try_recv()
        {
            buffer.jobs.push_back(job);
        }
        // Register interest before looking, so a wake-up between the look and the wait is not lost.
        let woken = engine.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if buffer.ask_store || buffer.claimed_at.elapsed() >= STORE_CLAIM_EVERY {
            buffer.claimed_at = Instant::now();
            buffer.ask_store = false;
            buffer.handed_since_claim = false;
            match claim_batch(&engine, &buffer.leases).await {
                Ok(jobs) if !jobs.is_empty() => {
                    // A full batch: more may be due.
                    buffer.ask_store = jobs.len() as i64 >= engine.config.batch;
                    buffer.jobs.extend(jobs);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "claiming due steps failed; retrying"),
            }
            if !buffer.jobs.is_empty() {
                continue;
            }
            let mut sleep = engine.config.poll_interval;
            if let Ok(Some(due)) = engine.store.next_due_at().await {
                let until_due = Duration::from_millis((due - engine.clock.now()).max(0) as u64);
                sleep = sleep.min(until_due);
            }
            buffer.idle_until = Instant::now() + sleep;
        }
        if !buffer.jobs.is_empty() {
            continue;
        }
        // A wake-up that came while this fetcher was busy with hand-offs was missed: after one,
        // the store is asked again within `STORE_CLAIM_EVERY`.
        let until = match buffer.handed_since_claim {
            true => buffer.idle_until.min(buffer.claimed_at + STORE_CLAIM_EVERY),
            false => buffer.idle_until,
        };
        tokio::select! {
            _ = &mut woken => buffer.ask_store = true,
            _ = tokio::time::sleep_until(until.into()) => buffer.ask_store = true,
            job = buffer.handed.recv() => {
                buffer.jobs.extend(job);
                buffer.handed_since_claim = true;
            }
        }
    }
}

/// Claims a batch of due steps and reads their runs, on a task of its own.
///
/// apalis stops polling the fetcher once a shutdown begins, and waits for the steps in flight.
/// A claim suspended there mid-statement would keep its connection for good: on SQLite the one
/// writer connection, which those steps' completions wait for, so the shutdown never ended
/// (`engine::accepted_runs_go_to_the_local_workers_and_back_to_the_store_at_shutdown` hung in
/// about one run in three). On its own task the claim finishes and gives the connection back;
/// what it claimed is given back with the rest ([`give_back`]).
async fn claim_batch(engine: &Arc<Engine>, leases: &Arc<Leases>) -> crate::Result<Vec<StepJob>> {
    let (engine, leases) = (engine.clone(), leases.clone());
    tokio::spawn(async move { claim_now(&engine, &leases).await }).await.map_err(|e| crate::Error::Batch(format!("the claim's task ended: {e}")))?
}

/// Claims a batch of due steps and reads their runs (one query for the batch rather than one
/// each). The claim's token is recorded first, so rows claimed by a claim cut off mid-way (a
/// shutdown) are given back with the rest.
async fn claim_now(engine: &Engine, leases: &Leases) -> crate::Result<Vec<StepJob>> {
    let now = engine.clock.now();
    let token = new_token();
    leases.add(&token);
    let lease_until = crate::clock::after(now, engine.config.lease);
    let claims = engine.store.claim(&token, now, lease_until, engine.config.batch).await?;
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = claims.iter().map(|c| c.run_id.as_str()).collect();
    let mut runs: HashMap<String, RunRow> = match engine.store.runs_by_ids(&ids).await {
        Ok(runs) => runs.into_iter().map(|r| (r.id.clone(), r)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "reading a claimed batch's runs failed; reading each");
            HashMap::new()
        }
    };
    Ok(claims
        .into_iter()
        .map(|claim| {
            let run = runs.remove(&claim.run_id);
            StepJob { claim, token: token.clone(), run }
        })
        .collect())
}

async fn handle(job: StepJob, engine: Data<Arc<Engine>>) -> Result<(), BoxDynError> {
    let run_id = job.claim.run_id.clone();
    let engine = Arc::clone(&engine);
    // Each step runs on its own tokio task, so steps use every core while the apalis worker
    // only schedules them.
    let outcome = tokio::spawn(async move { engine.process_run(&job.token, job.claim, job.run).await }).await?;
    outcome.map_err(|e| {
        tracing::error!(%run_id, error = %e, "step failed to process; it will be retried when its lease expires");
        Box::new(e) as BoxDynError
    })
}

/// Runs this process's workers until `shutdown` resolves; in-flight steps finish first.
/// Await it on the current task (e.g. in `tokio::join!`): apalis's worker future is not `Send`.
pub async fn run(engine: Arc<Engine>, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxDynError> {
    // The scheduler pass runs beside the workers and stops with them.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (worked, ()) = futures::join!(run_workers(engine.clone(), shutdown), run_scheduler(engine, stop_rx));
    worked
}

/// Fires due schedule ticks once per poll interval (1 s by default) until stopped: each pass is
/// one claim statement, so an idle process adds one query a second to the database's load, and a
/// tick fires at most a poll interval late.
async fn run_scheduler(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = engine.fire_due_schedules().await {
            tracing::warn!(error = %e, "schedule pass failed; trying again");
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(engine.config.poll_interval) => {}
        }
    }
}

async fn run_workers(engine: Arc<Engine>, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxDynError> {
    let leases = Arc::new(Leases::new(engine.config.lease));
    let fetcher_leases = leases.clone();
    let backend = BackendBuilder::new()
        .database(engine.clone())
        .fetcher(move |engine: &mut Arc<Engine>, _: &(), _| {
            // Room for as many handed-off runs as execute at once; beyond that, runs wait in the
            // store. (A fetcher made again after a drop installs a fresh queue.)
            let (sender, handed) = mpsc::channel(engine.config.concurrency.max(1));
            let queue = HandOffQueue { sender, token: new_token(), ticket: Arc::new(()) };
            *engine.handoff.lock().expect("hand-off lock") = Some(queue);
            let buffer = Buffer::new(engine.clone(), handed, fetcher_leases.clone());
            futures::stream::unfold(buffer, |buffer| async move {
                let (job, buffer) = next_job(buffer).await;
                // apalis's tracing layer names each task by its id.
                let id = TaskId::String(format!("{}:{}:{}", job.claim.run_id, job.claim.step_seq, job.claim.attempt));
                let task = TaskBuilder::new(job).task_id(id).build();
                Some((Ok::<_, BoxDynError>(Some(task)), buffer))
            })
            .boxed()
        })
        .sink(|_: &mut Arc<Engine>, _: &()| {
            // Work is enqueued by committing queue rows, never through apalis.
            futures::sink::drain::<Task<StepJob>>().sink_map_err(|never| -> BoxDynError { match never {} })
        })
        .build()?;
    let name = format!("switchboard-{}", std::process::id());
    let concurrency = engine.config.concurrency;
    let worker = WorkerBuilder::new(name).backend(backend).enable_tracing().catch_panic().concurrency(concurrency).data(engine.clone()).build(handle);
    let worked = worker.run_until(shutdown.map(Ok::<(), std::io::Error>)).await;
    give_back(&engine, &leases).await;
    worked?;
    Ok(())
}

/// After the workers stopped (no step in flight): no more hand-offs, and every queue row still
/// leased to this process goes back to the store, due at once.
async fn give_back(engine: &Engine, leases: &Leases) {
    let mut tokens = leases.tokens();
    let queue = engine.handoff.lock().expect("hand-off lock").take();
    if let Some(queue) = queue {
        // Hand-offs reserved before this moment may still be committing: let them land first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&queue.ticket) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokens.push(queue.token);
    }
    match engine.store.release_leases(&tokens, engine.clock.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(steps = n, "gave back steps taken but not started"),
        Err(e) => tracing::warn!(error = %e, "giving back taken steps failed; they are due again when their lease expires"),
    }
}
