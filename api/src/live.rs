//! `GET /v1/events`: the ledger as it grows, over Server-Sent Events.
//!
//! Events are read in the ledger's commit-safe global order (`EventStore::read_all`, which
//! never returns an event whose transaction could still be overtaken) by one shared follower
//! per process (`hub.rs`); each client catches up on its own (resumed, or a run's stream) and
//! then takes the follower's events. Each SSE message's `id` is the read checkpoint after that event
//! (`<commit>.<global>`), so a client that reconnects with `Last-Event-ID` (browsers do so by
//! themselves) resumes exactly after the last event it saw: nothing skipped, nothing twice.
//!
//! Where a stream starts: after `Last-Event-ID` (or `?after=`); else, with `?run_id=`, at the
//! run's first event; else at the current end of the ledger (live tail).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use runledger_contracts::envelope::{Position, RecordedEvent};
use runledger_contracts::ids::StreamId;
use runledger_ledger::EventStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{ApiQuery, run_id};
use crate::state::ApiState;

/// Events read per round trip.
const PAGE: usize = 500;

/// The channel the ledger's append trigger notifies.
pub const NOTIFY_CHANNEL: &str = "runledger_events";

/// The SSE event name of each event type, in `domain:entity:action` form.
pub const EVENT_NAMES: &[(&str, &str)] = &[
    ("RunStarted", "flowchart:run:updated"),
    ("RunCompleted", "flowchart:run:updated"),
    ("RunFailed", "flowchart:run:updated"),
    ("RunPaused", "flowchart:run:updated"),
    ("RunResumed", "flowchart:run:updated"),
    ("RunCancelRequested", "flowchart:run:updated"),
    ("RunCanceled", "flowchart:run:updated"),
    ("ChildRunStarted", "flowchart:run:updated"),
    ("RunForked", "flowchart:run:updated"),
    ("RunForkedTo", "flowchart:run:updated"),
    ("RunTakenOver", "flowchart:run:updated"),
    ("NodeScheduled", "flowchart:node:updated"),
    ("NodeDispatched", "flowchart:node:updated"),
    ("NodeStarted", "flowchart:node:updated"),
    ("NodeSucceeded", "flowchart:node:updated"),
    ("NodeFailed", "flowchart:node:updated"),
    ("NodeTimedOut", "flowchart:node:updated"),
    ("NodeRetryScheduled", "flowchart:node:updated"),
    ("NodeSkipped", "flowchart:node:updated"),
    ("NodeCanceled", "flowchart:node:updated"),
    ("NodeRewound", "flowchart:node:updated"),
    ("NodeResultIgnored", "flowchart:node:updated"),
    ("RoutingDecided", "flowchart:routing:decided"),
    ("ToolCalled", "flowchart:tool:called"),
    ("ArtifactPersisted", "flowchart:node_artifact:persisted"),
    ("FlowchartVersionCreated", "flowchart:definition:created"),
    ("IdempotencyKeyRecorded", "api:idempotency_key:recorded"),
];

/// Event types not in the table (added later, e.g. by other registries).
pub const FALLBACK_NAME: &str = "ledger:event:appended";

pub fn event_name(event_type: &str) -> &'static str {
    EVENT_NAMES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map_or(FALLBACK_NAME, |(_, n)| n)
}

/// `<commit>.<global>`: the checkpoint after an event.
pub fn encode_checkpoint(position: Position) -> String {
    format!("{}.{}", position.commit, position.global)
}

pub fn decode_checkpoint(text: &str) -> Option<Position> {
    let (commit, global) = text.trim().split_once('.')?;
    Some(Position {
        commit: commit.parse().ok()?,
        global: global.parse().ok()?,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Only events of this run.
    #[param(format = "uuid")]
    pub run_id: Option<String>,
    /// Start after this checkpoint (an earlier message's `id`); `Last-Event-ID` wins over it.
    #[param(pattern = r"^[0-9]+\.[0-9]+$")]
    pub after: Option<String>,
}

/// One SSE message as it goes over the wire: `id`, `event` and `data` fields, `data` being the
/// JSON of a [`LiveEvent`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = SseMessage)]
pub struct SseMessageDoc {
    /// The read checkpoint after this event, `<commit>.<sequence>`: resume with it as
    /// `Last-Event-ID` or `after`.
    #[schema(pattern = r"^[0-9]+\.[0-9]+$")]
    pub id: String,
    /// The SSE event name, e.g. `flowchart:node:updated`.
    pub event: String,
    /// A `LiveEvent` as JSON (see components/schemas/LiveEvent).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The `data` of every SSE message (JSON).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveEvent {
    /// The SSE event name, e.g. `flowchart:node:updated`.
    pub event: String,
    /// The ledger's event type, e.g. `NodeSucceeded`.
    pub event_type: String,
    pub event_id: String,
    /// Global position in the ledger (insertion order).
    pub sequence: u64,
    /// The writing transaction; `<commit>.<sequence>` is the message id.
    pub commit: u64,
    pub stream_id: String,
    pub stream_version: u64,
    pub schema_version: u32,
    pub run_id: Option<String>,
    pub node_id: Option<String>,
    pub node_run_id: Option<String>,
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub recorded_at: String,
    pub payload: Value,
}

impl LiveEvent {
    pub fn of(e: &RecordedEvent) -> Self {
        let text = |key: &str| {
            e.payload
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            event: event_name(&e.event_type).to_owned(),
            event_type: e.event_type.clone(),
            event_id: e.event_id.to_string(),
            sequence: e.position.global,
            commit: e.position.commit,
            stream_id: e.stream_id.to_string(),
            stream_version: e.stream_version,
            schema_version: e.schema_version,
            run_id: text("run_id"),
            node_id: text("node_id"),
            node_run_id: text("node_run_id"),
            request_id: e.request_id.to_string(),
            correlation_id: e.correlation_id.to_string(),
            causation_id: e.causation_id.as_ref().map(|c| c.to_string()),
            recorded_at: e.recorded_at.to_string(),
            payload: e.payload.clone(),
        }
    }
}

/// Live events of the ledger over SSE.
///
/// Message names are in `domain:entity:action` form (`flowchart:run:updated`,
/// `flowchart:node:updated`, `flowchart:node_artifact:persisted`, `flowchart:routing:decided`,
/// `flowchart:tool:called`, ...; see docs/api.md); each message's `id` is the read checkpoint
/// to resume from with `Last-Event-ID`, and its `data` a [`LiveEvent`].
#[utoipa::path(get, path = "/v1/events", tag = "events", params(LiveQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this message id")),
    responses((status = 200, content_type = "text/event-stream", description = "SSE messages whose data is a LiveEvent", body = SseMessageDoc),
        (status = 400, description = "`invalid_query`, `invalid_id`, `invalid_header`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 404, description = "`run_not_found`", body = crate::openapi::ErrorEnvelopeDoc),
        (status = 503, description = "`database_error`", body = crate::openapi::ErrorEnvelopeDoc)))]
pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = query.run_id.as_deref().map(run_id).transpose()?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(decode_checkpoint).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                "`Last-Event-ID` must be an event id this stream sent",
            )
        })?),
        None => match &query.after {
            Some(a) => Some(decode_checkpoint(a).ok_or_else(|| {
                crate::extract::invalid_query(
                    "after",
                    "`after` must be an event id this stream sent",
                )
            })?),
            None => None,
        },
    };
    state.start_follower();
    // Subscribed before anything is read, so what the shared follower reads from here on
    // reaches this stream; what it read before, the catch-up below reads itself.
    let receiver = state.inner.hub.subscribe();
    let stream = run.map(StreamId::for_run);
    if let (Some(run), Some(stream)) = (run, &stream)
        && state.store().stream_head(stream).await?.is_none()
    {
        return Err(ApiError::not_found(
            "run_not_found",
            format!("run {run} does not exist"),
        ));
    }
    let (position, catching_up) = match (resume, &stream) {
        (Some(position), _) => (position, true),
        // The whole run, then what follows.
        (None, Some(_)) => (Position::START, true),
        // The live tail: what the follower reads after the ledger's end as of now.
        (None, None) => (state.store().horizon_position().await?, false),
    };
    let follower = Follower {
        state: state.clone(),
        receiver,
        stream,
        position,
        last_version: 0,
        resumed_after: position,
        catching_up,
        buffer: VecDeque::new(),
        poll: state.config().sse_poll,
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        let event = f.next().await;
        Some((Ok(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One SSE client: it catches up by reading the ledger itself (its run's stream, or the
/// global order after its resume point), then takes events from the shared follower. Falling
/// more than the channel's capacity behind sends it back to catching up from its last event.
struct Follower {
    state: ApiState,
    receiver: broadcast::Receiver<Arc<RecordedEvent>>,
    /// Only this stream (a run's), read by stream version.
    stream: Option<StreamId>,
    /// The checkpoint after the last event sent (or where the stream starts).
    position: Position,
    /// With `stream`: the last stream version sent (or skipped as before `resumed_after`).
    last_version: u64,
    /// With `stream`: the resume point; events of the stream up to it were sent before.
    resumed_after: Position,
    catching_up: bool,
    buffer: VecDeque<Event>,
    poll: Duration,
}

impl Follower {
    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return event;
            }
            if self.catching_up {
                if let Err(e) = self.catch_up_page().await {
                    tracing::warn!(error = %e, "live events: reading the ledger failed; retrying");
                    tokio::time::sleep(self.poll * 5).await;
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(event) => self.offer(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                // The server's state is gone; the connection ends with it.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// Sends `event` unless this client already has it or does not want it.
    fn offer(&mut self, event: &RecordedEvent) {
        match &self.stream {
            Some(stream) => {
                if event.stream_id == *stream && event.stream_version > self.last_version {
                    self.last_version = event.stream_version;
                    self.position = event.position;
                    self.buffer.push_back(message(event));
                }
            }
            None => {
                if event.position > self.position {
                    self.position = event.position;
                    self.buffer.push_back(message(event));
                }
            }
        }
    }

    /// Reads one page of what this client has not seen; a short page ends the catch-up.
    async fn catch_up_page(&mut self) -> Result<(), runledger_ledger::StoreError> {
        let full = match self.stream.clone() {
            Some(stream) => {
                let page = self
                    .state
                    .store()
                    .read_stream(&stream, self.last_version + 1, PAGE)
                    .await?;
                let full = page.len() == PAGE;
                for event in &page {
                    // A resumed run stream skips what the client had before.
                    if event.position > self.resumed_after {
                        self.position = event.position;
                        self.buffer.push_back(message(event));
                    }
                    self.last_version = event.stream_version;
                }
                full
            }
            None => {
                let page = self.state.store().read_all(self.position, PAGE).await?;
                let full = page.events.len() == PAGE;
                for event in &page.events {
                    self.buffer.push_back(message(event));
                }
                self.position = page.checkpoint;
                full
            }
        };
        if !full {
            self.catching_up = false;
        }
        Ok(())
    }
}

fn message(e: &RecordedEvent) -> Event {
    let data = serde_json::to_string(&LiveEvent::of(e)).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(encode_checkpoint(e.position))
        .event(event_name(&e.event_type))
        .data(data)
}

/// The ledger's append trigger (`migrations/0002_projections.sql`) notifies channel
/// `runledger_events` with the schema it wrote to. One LISTEN connection per server wakes the
/// shared follower; it ends once the server's state is gone.
pub(crate) fn start_listener(state: &ApiState) {
    use std::sync::atomic::Ordering;
    if state.inner.listening.swap(true, Ordering::SeqCst) {
        return;
    }
    // SQLite has no notifications: the follower polls every `sse_poll`.
    let Some(pool) = state.db().postgres().cloned() else {
        return;
    };
    let appended = std::sync::Arc::downgrade(&state.inner.appended);
    tokio::spawn(async move {
        let schema: String = match sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "live events: cannot read the schema; polling only");
                return;
            }
        };
        while appended.strong_count() > 0 {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "live events: cannot LISTEN; polling until it works");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                tracing::warn!(error = %e, "live events: cannot LISTEN; polling until it works");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
                    Ok(Ok(note)) if note.payload() == schema => match appended.upgrade() {
                        Some(notify) => notify.notify_waiters(),
                        None => return,
                    },
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "live events: LISTEN connection lost; reconnecting");
                        break;
                    }
                    // Look whether the server is still there.
                    Err(_) if appended.strong_count() == 0 => return,
                    Err(_) => {}
                }
            }
        }
    });
}

#[cfg(test)]
mod names {
    use runledger_contracts::events::EventType;

    use super::{FALLBACK_NAME, event_name};

    /// A run's page listens for its named events only: an event type of a run stream left to the
    /// fallback name would change the run without the page noticing.
    #[test]
    fn every_run_stream_event_type_has_a_name_of_its_own() {
        let unnamed: Vec<String> = EventType::ALL
            .iter()
            .map(ToString::to_string)
            .filter(|t| t.starts_with("Run") || t.starts_with("Node") || t.starts_with("ChildRun"))
            .filter(|t| event_name(t) == FALLBACK_NAME)
            .collect();
        assert!(unnamed.is_empty(), "no SSE name: {unnamed:?}");
    }
}
