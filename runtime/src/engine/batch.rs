//! Group commit. Concurrent callers hand their writes to a few writer tasks; each writer takes
//! whatever is waiting (up to a batch) and commits it in one transaction, then answers every
//! caller. Durability is unchanged — nobody is answered before the commit — but fsyncs, round
//! trips and (on SQLite) the one writer connection's turns are shared.
//!
//! Two queues use it: accepted events ([`Engine::record_accepted`](super::Engine)) and step
//! completions ([`Engine::complete`](super::Engine)). On SQLite each has one writer task, and
//! both take turns on the store's single writer connection, whose waiters are served in order:
//! a flood of webhooks cannot starve the steps (due timers among them) of commits, nor the
//! reverse — each side gets a turn per batch, and a batch takes everything that is waiting.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// An item waiting for its batch, with where its result goes.
type Waiting<T, R> = (T, oneshot::Sender<R>);

/// A queue in front of writer tasks that commit items in batches.
pub(crate) struct GroupCommit<T, R> {
    tx: mpsc::Sender<Waiting<T, R>>,
}

impl<T, R> std::fmt::Debug for GroupCommit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("waiting", &(self.tx.max_capacity() - self.tx.capacity())).finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts `writers` tasks (on the current tokio runtime). `write` commits a batch of at most
    /// `max_batch` items and answers one result per item, in order.
    pub(crate) fn start<F, Fut>(writers: usize, max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4 * max_batch);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..writers {
            tokio::spawn(write_loop(rx.clone(), max_batch, write.clone()));
        }
        Self { tx }
    }

    /// Hands `item` to a writer and waits for its result; `None` if the writers stopped (their
    /// runtime shut down) before answering.
    pub(crate) async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn write_loop<T, R, F, Fut>(rx: Arc<Mutex<mpsc::Receiver<Waiting<T, R>>>>, max_batch: usize, write: Arc<F>)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    loop {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some((item, reply)) = rx.recv().await else { return };
            items.push(item);
            replies.push(reply);
            while items.len() < max_batch {
                match rx.try_recv() {
                    Ok((item, reply)) => {
                        items.push(item);
                        replies.push(reply);
                    }
                    Err(_) => break,
                }
            }
        }
        let results = write(items).await;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}
