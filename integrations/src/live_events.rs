//! Live run events shared by every process through Redis pub/sub (`SWITCHBOARD_REDIS_URL`).
//!
//! A process publishes each committed change to `switchboard:events:{account}`; a process with
//! listeners (an open `GET /v1/runs/{id}/events` or `GET /v1/events/stream`) subscribes to the
//! channels of exactly the accounts they watch (workers subscribe to nothing). Publishing goes
//! through a bounded queue to one task that pipelines `PUBLISH`es, so the step path never waits
//! on Redis; if the queue is full the event is dropped (live events are lossy by design,
//! [`switchboard_runtime::events`]).
//!
//! Redis holds only what may be lost: while it is unreachable, events are delivered to this
//! process's own listeners (others' events are missed), a warning is logged once, `/readyz`
//! says `in_process_fallback`, and both connections are retried every few seconds. Around an
//! outage a listener may see an event twice (once locally, once through Redis); ids are unique.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use switchboard_runtime::events::{EventBus, Hub, Interest, RunEvent, Subscription};
use tokio::sync::mpsc;

/// Events waiting to be published before new ones are dropped.
const QUEUE: usize = 8192;
/// `PUBLISH`es per pipeline.
const BATCH: usize = 256;
/// The longest a Redis call may take before it counts as an outage.
const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often a lost connection is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

fn channel(account_id: &str) -> String {
    format!("switchboard:events:{account_id}")
}

/// Connection health, shared by the two tasks and the bus.
#[derive(Debug, Default)]
struct Health {
    publishing: AtomicBool,
    subscribed: AtomicBool,
    warned: AtomicBool,
}

impl Health {
    fn up(&self) -> bool {
        self.publishing.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }

    fn down(&self, what: &str, why: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "Redis is unreachable ({what}): live events reach this process's listeners only until it answers");
        }
    }

    fn check_recovered(&self) {
        if self.up() && self.warned.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again: live events are shared again");
        }
    }
}

/// An [`EventBus`] over Redis pub/sub, with in-process delivery while Redis is away.
#[derive(Debug)]
pub struct RedisEventBus {
    hub: Arc<Hub>,
    queue: mpsc::Sender<RunEvent>,
    health: Arc<Health>,
}

impl RedisEventBus {
    /// A bus on the Redis at `url`; starts its publishing and subscribing tasks on the current
    /// Tokio runtime. An unreachable Redis is not an error here (see the module docs).
    pub fn start(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let (interest_tx, interest_rx) = mpsc::unbounded_channel();
        let hub = Arc::new(Hub::with_interest(interest_tx));
        let health = Arc::new(Health::default());
        let (queue, queue_rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish_loop(client.clone(), queue_rx, hub.clone(), health.clone()));
        tokio::spawn(subscribe_loop(client, interest_rx, Arc::downgrade(&hub), health.clone()));
        Ok(Self { hub, queue, health })
    }
}

impl EventBus for RedisEventBus {
    fn publish(&self, event: RunEvent) {
        if self.queue.try_send(event).is_err() {
            metrics::counter!("switchboard_live_events_dropped_total").increment(1);
        }
    }

    fn subscribe(&self, account_id: &str) -> Subscription {
        self.hub.subscribe(account_id)
    }

    fn status(&self) -> &'static str {
        if self.health.up() { "redis" } else { "in_process_fallback" }
    }
}

/// Publishes queued events in pipelines; while Redis is away, delivers them here instead.
async fn publish_loop(client: redis::Client, mut queue: mpsc::Receiver<RunEvent>, hub: Arc<Hub>, health: Arc<Health>) {
    let mut connection = connect(&client, &health).await;
    health.publishing.store(connection.is_some(), Ordering::Relaxed);
    let mut batch = Vec::with_capacity(BATCH);
    // One timer for the whole loop, so that steady traffic cannot keep postponing it.
    let mut retry = tokio::time::interval(RECONNECT_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = queue.recv_many(&mut batch, BATCH) => if n == 0 { return },
            // Degraded: look again (connect, or PING the connection that reconnects by itself),
            // so publishing and readiness recover with or without traffic.
            _ = retry.tick(), if !health.publishing.load(Ordering::Relaxed) => {
                if connection.is_none() {
                    connection = connect(&client, &health).await;
                }
                if let Some(c) = &mut connection {
                    let pong = tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<()>(c)).await;
                    health.publishing.store(matches!(pong, Ok(Ok(()))), Ordering::Relaxed);
                    health.check_recovered();
                }
                continue;
            }
        }
        // While degraded, deliver here at once instead of waiting on Redis batch after batch;
        // the timer above finds out when it is back.
        let degraded = !health.publishing.load(Ordering::Relaxed);
        let sent = match &mut connection {
            Some(c) if !degraded => {
                let mut pipe = redis::pipe();
                for event in &batch {
                    let body = serde_json::to_string(event).unwrap_or_default();
                    pipe.publish(channel(&event.account_id), body).ignore();
                }
                match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(c)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        health.down("publishing", &e.to_string());
                        false
                    }
                    Err(_) => {
                        health.down("publishing", "PUBLISH timed out");
                        false
                    }
                }
            }
            _ => false,
        };
        health.publishing.store(sent, Ordering::Relaxed);
        health.check_recovered();
        // Without a working subscription this process would not hear its own events back.
        if !sent || !health.subscribed.load(Ordering::Relaxed) {
            for event in batch.drain(..) {
                hub.deliver(Arc::new(event));
            }
        }
        batch.clear();
    }
}

/// A publishing connection (it reconnects by itself once made), or `None` while Redis is away.
async fn connect(client: &redis::Client, health: &Health) -> Option<ConnectionManager> {
    match tokio::time::timeout(REDIS_TIMEOUT, ConnectionManager::new(client.clone())).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            health.down("publishing", &e.to_string());
            None
        }
        Err(_) => {
            health.down("publishing", "connecting timed out");
            None
        }
    }
}

/// How often an idle pub/sub connection is checked (a half-open connection never errors).
const PING_EVERY: Duration = Duration::from_secs(15);

/// Keeps one pub/sub connection subscribed to the channels of the accounts watched here. Holds
/// the hub weakly: the task ends with the bus.
async fn subscribe_loop(client: redis::Client, mut interest: mpsc::UnboundedReceiver<Interest>, hub: Weak<Hub>, health: Arc<Health>) {
    // A Redis call that does not answer in time counts as a lost connection.
    async fn bounded<T>(call: impl std::future::Future<Output = redis::RedisResult<T>>) -> bool {
        matches!(tokio::time::timeout(REDIS_TIMEOUT, call).await, Ok(Ok(_)))
    }
    loop {
        match tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let Some(watched) = hub.upgrade().map(|h| h.watched()) else { return };
                let channels: Vec<String> = watched.iter().map(|a| channel(a)).collect();
                let mut ok = channels.is_empty() || bounded(sink.subscribe(&channels)).await;
                if ok {
                    health.subscribed.store(true, Ordering::Relaxed);
                    health.check_recovered();
                }
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.reset();
                while ok {
                    tokio::select! {
                        change = interest.recv() => {
                            ok = match change {
                                Some(Interest::Watch(account, confirm)) => {
                                    let subscribed = bounded(sink.subscribe(channel(&account))).await;
                                    if subscribed {
                                        confirm.send_replace(true);
                                    }
                                    subscribed
                                }
                                Some(Interest::Unwatch(account)) => bounded(sink.unsubscribe(channel(&account))).await,
                                None => return, // the bus is gone
                            };
                        }
                        message = stream.next() => match message {
                            Some(message) => match serde_json::from_slice::<RunEvent>(message.get_payload_bytes()) {
                                Ok(event) => match hub.upgrade() {
                                    Some(hub) => hub.deliver(Arc::new(event)),
                                    None => return,
                                },
                                Err(e) => tracing::warn!(error = %e, "ignoring a malformed live event from Redis"),
                            },
                            None => ok = false,
                        },
                        _ = ping.tick() => ok = bounded(sink.ping::<()>()).await,
                    }
                }
                health.down("subscribing", "the pub/sub connection closed");
            }
            Ok(Err(e)) => health.down("subscribing", &e.to_string()),
            Err(_) => health.down("subscribing", "connecting timed out"),
        }
        health.subscribed.store(false, Ordering::Relaxed);
        // Interest that changes meanwhile is picked up from the hub on reconnect.
        let wait = tokio::time::sleep(RECONNECT_EVERY);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                change = interest.recv() => if change.is_none() { return },
            }
        }
    }
}
