//! `GET /api/v1/runs/stream[?trigger=NAME]`: finished runs as server-sent
//! events, for the web page's live view and for scripts (`curl -N`).
//!
//! - Runs are sent in batches, at most one batch per [`BATCH_EVERY`] and
//!   [`MAX_BATCH`] runs in one: `event: runs`, `data:` a JSON list of run
//!   summaries (the record without its recording), `id:` the last run id. A
//!   thousand runs a second are ten small messages, not a thousand.
//! - A subscriber that falls more than the broadcast buffer behind gets
//!   `event: lagged` with how many runs it missed; they are in the history.
//! - A reconnect (`Last-Event-ID`) first gets `event: resync`: the runs
//!   between are in the history, so the client reloads what it shows.
//! - `: heartbeat` comments keep an idle stream alive through proxies and
//!   tell the connection watchdog the client still reads (a client that
//!   stops reading is cut off after `idleTimeout`).
//! - At most [`MAX_STREAMS`] streams at once; more get 503.
//!
//! It is behind the API token like the rest of `/api`; a browser sends the
//! token with `fetch`, never in the URL.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Response, StatusCode};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Body, error};
use crate::runs::RunRecord;

/// The stream's content type (the connection watchdog keys on it).
pub(super) const CONTENT_TYPE: &str = "text/event-stream";
/// How often a batch is sent at most.
pub const BATCH_EVERY: Duration = Duration::from_millis(100);
/// Most runs in one batch; more wait for the next.
pub const MAX_BATCH: usize = 500;
/// Most streams open at once.
pub const MAX_STREAMS: usize = 64;

/// Streams open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Counts an open stream until dropped.
struct Open;

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a stream sends of a run: the record without its recording.
fn summary(run: &RunRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("recording");
    }
    value
}

/// One server-sent event, redacted.
fn event(name: &str, id: Option<&str>, data: &serde_json::Value) -> Bytes {
    let data = crate::redact::redact_str(&data.to_string()).into_owned();
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    Bytes::from(format!("event: {name}\n{id}data: {data}\n\n"))
}

/// The stream's response; `heartbeat`: how often an idle stream says so.
pub(super) fn respond(
    runs: broadcast::Receiver<Arc<RunRecord>>,
    trigger: Option<String>,
    reconnect: bool,
    heartbeat: Duration,
) -> Response<Body> {
    if OPEN.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_STREAMS} run streams are open; retry later"),
        );
    }
    let mut first = String::from("retry: 2000\n\n");
    if reconnect {
        first.push_str("event: resync\ndata: {}\n\n");
    }
    let state = Stream {
        runs,
        trigger,
        heartbeat,
        first: Some(Bytes::from(first)),
        missed: 0,
        _open: Open,
    };
    let frames = futures::stream::unfold(state, |mut s| async move {
        let bytes = s.next().await;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), s))
    });
    Response::builder()
        .header("content-type", CONTENT_TYPE)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap_or_default()
}

struct Stream {
    runs: broadcast::Receiver<Arc<RunRecord>>,
    trigger: Option<String>,
    heartbeat: Duration,
    first: Option<Bytes>,
    /// Runs missed while gathering a batch, told next.
    missed: u64,
    _open: Open,
}

impl Stream {
    /// The next bytes to send: a batch, a lag notice or a heartbeat.
    async fn next(&mut self) -> Bytes {
        if let Some(first) = self.first.take() {
            return first;
        }
        if self.missed > 0 {
            let missed = std::mem::take(&mut self.missed);
            return event("lagged", None, &serde_json::json!({ "missed": missed }));
        }
        let mut batch = Vec::new();
        let wanted = |run: &RunRecord, trigger: &Option<String>| {
            trigger.as_deref().is_none_or(|t| run.trigger == t)
        };
        // Wait for the first run (or the heartbeat), then gather for one batch period.
        let until = tokio::time::sleep(self.heartbeat);
        tokio::pin!(until);
        loop {
            tokio::select! {
                got = self.runs.recv() => match got {
                    Ok(run) if wanted(&run, &self.trigger) => {
                        batch.push(run);
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        return event("lagged", None, &serde_json::json!({ "missed": missed }));
                    }
                    // The engine is stopping: say so, then keep quiet.
                    Err(RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                },
                _ = &mut until => return Bytes::from_static(b": heartbeat\n\n"),
            }
        }
        let gather = tokio::time::sleep(BATCH_EVERY);
        tokio::pin!(gather);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                got = self.runs.recv() => match got {
                    Ok(run) if wanted(&run, &self.trigger) => batch.push(run),
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        self.missed += missed;
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = &mut gather => break,
            }
        }
        let last = batch.last().map(|r| r.run_id.clone());
        let list: Vec<serde_json::Value> = batch.iter().map(|r| summary(r)).collect();
        event("runs", last.as_deref(), &serde_json::Value::Array(list))
    }
}
