//! Live run events as Server-Sent Events.
//!
//! - `GET /v1/runs/{id}/events`: first a `snapshot` event (the run as `GET /v1/runs/{id}`
//!   answers it), then the run's changes (`step.updated`, `run.retried`, `run.finished`); the
//!   stream ends after `run.finished`, at once if the run had already finished.
//! - `GET /v1/events/stream[?workflow_id=]`: every change of the account's runs
//!   (`run.created` as well), until the client leaves.
//!
//! Each SSE message has `id:` (unique, time-ordered), `event:` (the type) and `data:` (the
//! [`RunEvent`] as JSON). Live events may be lost (see [`switchboard_runtime::events`]); there
//! is no replay from `Last-Event-ID`. A run stream that fell behind gets a fresh `snapshot`; the
//! account stream gets a `lagged` event saying how many it missed. Either way the store is the
//! truth: read the runs again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use switchboard_runtime::events::{RunEvent, Subscription};
use switchboard_runtime::status::RunStatus;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Query;
use super::runs::run_detail;
use crate::app::AppState;
use crate::auth::AccountAuth;
use crate::error::ApiResult;
use crate::openapi::{self as doc, built_once};

/// Comment lines sent while nothing happens, so proxies keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a run stream waits for an event before reading the run again: events may be lost,
/// and a lost `run.finished` must not leave the stream open for good.
const RECHECK: Duration = Duration::from_secs(30);

/// `/v1/runs/{id}/events`, `/v1/events/stream`, documented.
pub fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_events)).routes(routes!(account_events))
}

/// `/v1/runs/{id}/events`, `/v1/events/stream`.
pub fn router() -> Router<AppState> {
    built_once!(documented)
}

type EventStream = Sse<axum::response::sse::KeepAliveStream<futures::stream::BoxStream<'static, Result<Event, Infallible>>>>;

fn sse_event(event: &RunEvent) -> Event {
    Event::default().id(event.id.clone()).event(event.kind.clone()).json_data(event).unwrap_or_default()
}

/// The stream, ended when the process stops (graceful shutdown waits for open responses).
fn respond(state: &AppState, stream: impl Stream<Item = Event> + Send + 'static) -> EventStream {
    let mut stopping = state.shutdown.subscribe();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    Sse::new(stream.map(Ok).take_until(Box::pin(stopped)).boxed()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// What a run stream still has to do.
struct RunStream {
    state: AppState,
    account_id: String,
    run_id: String,
    subscription: Subscription,
    /// The event to send before listening again (a snapshot).
    queued: Option<Event>,
    /// The run has finished: end after `queued`.
    done: bool,
}

impl RunStream {
    /// The run as it is now, as a `snapshot` event; notes whether it has finished.
    async fn snapshot(&mut self) -> ApiResult<Event> {
        let run = run_detail(&self.state, &self.account_id, &self.run_id).await?;
        self.done = run.run.status.parse::<RunStatus>().is_ok_and(RunStatus::is_final);
        Ok(Event::default().event("snapshot").json_data(&run).unwrap_or_default())
    }

    async fn next(mut self) -> Option<(Event, Self)> {
        if let Some(event) = self.queued.take() {
            return Some((event, self));
        }
        if self.done {
            return None;
        }
        loop {
            let Ok(received) = tokio::time::timeout(RECHECK, self.subscription.recv()).await else {
                // Quiet for a while: if the run ended meanwhile (its event lost), say so and end.
                let finished = self.state.engine.store().run_by_id(&self.run_id).await.ok()?.is_none_or(|r| r.status.is_final());
                if finished {
                    let event = self.snapshot().await.ok()?;
                    return Some((event, self));
                }
                continue;
            };
            match received {
                Ok(event) if event.run_id == self.run_id => {
                    self.done = event.is_final();
                    return Some((sse_event(&event), self));
                }
                Ok(_) => {}
                // Fell behind: what was missed is in a fresh snapshot.
                Err(RecvError::Lagged(_)) => {
                    let event = self.snapshot().await.ok()?;
                    return Some((event, self));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// One run's live events
///
/// Server-Sent Events. First a `snapshot` event (the run as `GET /v1/runs/{id}` answers it), then
/// the run's changes (`step.updated`, `run.retried`, `run.finished`); the stream ends after
/// `run.finished`, at once if the run had already finished. Each message has `id:` (unique,
/// time-ordered), `event:` (the type) and `data:` (JSON). Events may be lost and are not replayed
/// from `Last-Event-ID`: a stream that fell behind gets a fresh `snapshot`.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    tag = "live",
    operation_id = "run_events",
    security(("account_key" = [])),
    params(("id" = String, Path, description = "The run")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, description = "`not_found`: no such run in this account", body = doc::ErrorBody),
        doc::Unauthorized,
    ),
)]
async fn run_events(State(state): State<AppState>, AccountAuth(account): AccountAuth, Path(id): Path<String>) -> ApiResult<EventStream> {
    // An unknown run (or another account's) answers 404 before anything is subscribed.
    run_detail(&state, &account.id, &id).await?;
    // Listen first, then read: a change committed in between is in the snapshot, or arrives
    // as an event after it (or both), but is never missed.
    let mut subscription = state.engine.events().subscribe(&account.id);
    subscription.ready().await;
    let mut stream = RunStream { state: state.clone(), account_id: account.id, run_id: id, subscription, queued: None, done: false };
    stream.queued = Some(stream.snapshot().await?);
    Ok(respond(&state, futures::stream::unfold(stream, RunStream::next)))
}

/// Filters of the account stream.
#[derive(Debug, Default, Deserialize)]
struct StreamFilter {
    /// Only this workflow's runs.
    workflow_id: Option<String>,
}

/// Every live event of the account
///
/// Server-Sent Events: `run.created`, `step.updated`, `run.retried` and `run.finished` of every run
/// of the account (or of one workflow), until the client leaves. A listener that fell behind
/// gets a `lagged` event (`{"missed": n}`): read the runs again.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "live",
    operation_id = "account_events",
    security(("account_key" = [])),
    params(("workflow_id" = Option<String>, Query, description = "Only this workflow's runs")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        doc::BadQuery,
        doc::Unauthorized,
    ),
)]
async fn account_events(State(state): State<AppState>, AccountAuth(account): AccountAuth, Query(filter): Query<StreamFilter>) -> ApiResult<EventStream> {
    let mut subscription = state.engine.events().subscribe(&account.id);
    subscription.ready().await;
    let filter = Arc::new(filter);
    let stream = futures::stream::unfold(subscription, move |mut subscription| {
        let filter = filter.clone();
        async move {
            loop {
                match subscription.recv().await {
                    Ok(event) if filter.workflow_id.as_ref().is_none_or(|w| *w == event.workflow_id) => {
                        return Some((sse_event(&event), subscription));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        let event = Event::default().event("lagged").json_data(json!({ "missed": missed })).unwrap_or_default();
                        return Some((event, subscription));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(respond(&state, stream))
}
