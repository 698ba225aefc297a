//! Group commit for accepted events. Concurrent requests hand their rows to a few writer tasks;
//! each writer takes whatever is waiting (up to a batch) and commits it in one transaction with
//! multi-row inserts, then answers every request. Durability is unchanged — nobody is answered
//! before the commit — but fsyncs and round trips are shared.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{Dialect, NewEvent, NewRun, Store};
use crate::{Error, Result};

const MAX_BATCH: usize = 256;

struct Pending {
    event: NewEvent,
    runs: Vec<NewRun>,
    /// `Err((database unreachable, message))` when the batch failed.
    reply: oneshot::Sender<Result<(), (bool, String)>>,
}

/// The queue in front of the writers.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the writer tasks (on the current tokio runtime).
    pub(crate) fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        // SQLite has one writer connection; PostgreSQL overlaps a few commits.
        let writers = match store.dialect() {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 4,
        };
        for _ in 0..writers {
            tokio::spawn(write_loop(store.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Records an event and its runs; returns once they are committed.
    pub(crate) async fn record(&self, event: NewEvent, runs: Vec<NewRun>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { event, runs, reply }).await.map_err(|_| Error::Batch("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Batch("the writer stopped".into()))?
            .map_err(|(unavailable, message)| if unavailable { Error::Unavailable(message) } else { Error::Batch(message) })
    }
}

async fn write_loop(store: Store, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(p) => batch.push(p),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let items: Vec<(NewEvent, Vec<NewRun>)> = batch.iter_mut().map(|p| (p.event.clone(), std::mem::take(&mut p.runs))).collect();
        let result = store.record_batch(&items).await.map_err(|e| (e.is_unavailable(), e.to_string()));
        if let Err(e) = &result {
            tracing::error!(error = %e.1, events = items.len(), "group commit failed");
        }
        for p in batch {
            let _ = p.reply.send(result.clone());
        }
    }
}
