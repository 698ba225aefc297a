//! Workers on apalis. apalis runs the workers (concurrency limit, panic catching, tracing,
//! graceful shutdown); the store feeds them. Our apalis backend is a [`CustomBackend`] whose
//! fetcher claims due steps from the store, so apalis never holds a delay or a retry: a task it
//! holds is a leased queue row, and if the process dies the lease expires and the row is due
//! again for any worker.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BackendBuilder, BoxDynError, Data, Task, TaskBuilder, TaskId, WorkerBuilder, WorkerBuilderExt};
use futures::{FutureExt, SinkExt, StreamExt};

use super::{Engine, new_token};
use crate::store::{Claim, RunRow};

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

/// Claimed steps not yet handed to apalis; given back on drop so a shutdown does not leave them
/// waiting for their lease to expire.
struct Buffer {
    engine: Arc<Engine>,
    jobs: VecDeque<StepJob>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        let jobs: Vec<StepJob> = self.jobs.drain(..).collect();
        let engine = self.engine.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let now = engine.clock.now();
                for job in jobs {
                    let _ = engine.store.release(&job.claim.run_id, &job.token, now).await;
                }
            });
        }
    }
}

/// Waits for the next due step and claims a batch. Never yields "nothing": an idle worker sleeps
/// until the earliest due time, a local wake-up, or the poll interval, whichever comes first.
async fn next_job(mut buffer: Buffer) -> (StepJob, Buffer) {
    loop {
        if let Some(job) = buffer.jobs.pop_front() {
            return (job, buffer);
        }
        let engine = buffer.engine.clone();
        // Register interest before looking, so a wake-up between the look and the wait is not lost.
        let woken = engine.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = engine.clock.now();
        let token = new_token();
        let lease_until = crate::clock::after(now, engine.config.lease);
        match engine.store.claim(&token, now, lease_until, engine.config.batch).await {
            Ok(claims) if !claims.is_empty() => {
                // The batch's runs in one read rather than one each.
                let ids: Vec<&str> = claims.iter().map(|c| c.run_id.as_str()).collect();
                let mut runs: HashMap<String, RunRow> = match engine.store.runs_by_ids(&ids).await {
                    Ok(runs) => runs.into_iter().map(|r| (r.id.clone(), r)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a claimed batch's runs failed; reading each");
                        HashMap::new()
                    }
                };
                buffer.jobs.extend(claims.into_iter().map(|claim| {
                    let run = runs.remove(&claim.run_id);
                    StepJob { claim, token: token.clone(), run }
                }));
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "claiming due steps failed; retrying"),
        }
        let mut sleep = engine.config.poll_interval;
        if let Ok(Some(due)) = engine.store.next_due_at().await {
            let until_due = Duration::from_millis((due - engine.clock.now()).max(0) as u64);
            sleep = sleep.min(until_due);
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
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
    let backend = BackendBuilder::new()
        .database(engine.clone())
        .fetcher(|engine: &mut Arc<Engine>, _: &(), _| {
            let buffer = Buffer { engine: engine.clone(), jobs: VecDeque::new() };
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
    let worker = WorkerBuilder::new(name).backend(backend).enable_tracing().catch_panic().concurrency(concurrency).data(engine).build(handle);
    worker.run_until(shutdown.map(Ok::<(), std::io::Error>)).await?;
    Ok(())
}
