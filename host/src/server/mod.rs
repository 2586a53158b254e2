//! The engine's HTTP surface, one listener (`--listen`):
//!
//! - `POST /hooks/{trigger}`: webhook sources ([`webhook`]);
//! - `GET /metrics`: Prometheus/OpenMetrics text;
//! - `GET /healthz`: the process is alive; `GET /readyz`: config loaded,
//!   modules compiled, sources started;
//! - `/api/v1/...`: runs, triggers and manual firing ([`api`]), behind a
//!   bearer token ([`token`]; `run` refuses a non-loopback listener without
//!   one); the `runs`, `triggers` and `fire` commands use it.
//!
//! The listener starts before the engine so that `/readyz` can say "not yet".
//! Hostile clients are bounded (`engine.server`, [`ServerLimits`]): a cap on
//! connections, header / body / idle timeouts per connection ([`conn`]), and
//! one budget for request-body bytes held in memory across all requests;
//! accept errors back off instead of spinning.

pub mod activity;
mod api;
pub mod cloudevents;
mod conn;
mod redrive;
pub mod replay;
mod stream;
mod token;
mod ui;
mod webhook;

pub use api::since;
pub use token::{ApiToken, TokenSource, check_token};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::capabilities::secrets::SecretStore;
use crate::config::ServerLimits;
use crate::metrics::Metrics;
use crate::runs::store::RunStore;
use crate::trigger_set::TriggerSet;

/// Largest request head (request line and headers) read from a client.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// What the handlers need of the running engine.
pub struct ServerContext {
    /// The live triggers (lookup, submission, views).
    pub triggers: Arc<TriggerSet>,
    /// The stored runs.
    pub history: Arc<RunStore>,
    /// Where webhook keys come from.
    pub secrets: SecretStore,
    /// What replays need (None: runs are not recorded).
    pub replay: Option<replay::ReplayContext>,
    /// Shadow comparisons.
    pub shadows: Arc<crate::dispatch::shadow::ShadowLog>,
    /// Finished runs, as they finish (the run stream, the activity counts).
    pub runs: tokio::sync::broadcast::Sender<Arc<crate::runs::RunRecord>>,
}

/// What request handlers share.
pub struct ServerState {
    metrics: Arc<Metrics>,
    api_token: Option<TokenSource>,
    engine: OnceLock<ServerContext>,
    ready: AtomicBool,
    limits: ServerLimits,
    /// Request-body bytes that may be held at once, across all requests.
    body_budget: Arc<Semaphore>,
    /// Runs per minute per trigger, counted once the engine is attached.
    activity: OnceLock<Arc<activity::Activity>>,
}

impl ServerState {
    /// State for a server that has no engine yet.
    pub fn new(
        metrics: Arc<Metrics>,
        api_token: Option<TokenSource>,
        limits: ServerLimits,
    ) -> Arc<Self> {
        let budget = usize::try_from(limits.max_body_bytes_in_flight)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Arc::new(ServerState {
            metrics,
            api_token,
            engine: OnceLock::new(),
            ready: AtomicBool::new(false),
            limits,
            body_budget: Arc::new(Semaphore::new(budget)),
            activity: OnceLock::new(),
        })
    }

    /// Hands the running engine to the handlers.
    pub fn attach(&self, engine: ServerContext) {
        let _ = self
            .activity
            .set(activity::Activity::follow(engine.runs.subscribe()));
        let _ = self.engine.set(engine);
    }

    /// Marks the engine ready (or not, while stopping).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` says yes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// A running server.
pub struct Server {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds and serves until [`Server::stop`].
    pub async fn start(addr: SocketAddr, state: Arc<ServerState>) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, state));
        tracing::info!(%addr, "HTTP server listening");
        Ok(Server { addr, task })
    }

    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Accepts connections up to the cap, each served with its own watchdog.
async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<ServerState>) {
    let slots = Arc::new(Semaphore::new(state.limits.max_connections));
    let mut backoff = conn::AcceptBackoff::new();
    let mut refusals = conn::RefusalLog::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) and the like: retrying at
                // once would spin; the pending connection waits in the backlog.
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refused(state.limits.max_connections);
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            serve_connection(stream, state).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<ServerState>) {
    let phase = conn::Phase::new();
    let io = hyper_util::rt::TokioIo::new(conn::Tracked::new(stream, phase.clone()));
    let service = {
        let (state, phase) = (state.clone(), phase.clone());
        hyper::service::service_fn(move |req| {
            let (state, phase) = (state.clone(), phase.clone());
            async move {
                phase.busy();
                let response = route(state, req).await;
                let streamed = response.as_ref().is_ok_and(|r| {
                    r.headers()
                        .get(hyper::header::CONTENT_TYPE)
                        .is_some_and(|v| v == stream::CONTENT_TYPE)
                });
                if streamed {
                    phase.streaming();
                } else {
                    phase.idle();
                }
                response
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES * 2)
        .serve_connection(io, service);
    tokio::select! {
        _ = connection => {}
        why = phase.overstayed(&state.limits) => {
            tracing::debug!(reason = why, "closing a slow or idle connection");
        }
    }
}

/// Reads a request body of at most `max` bytes within the body timeout,
/// holding its size against the server-wide in-flight budget while it is
/// read (the permit comes back with the bytes). Err is the response to send.
pub(crate) async fn read_body(
    state: &ServerState,
    body: Incoming,
    declared: Option<u64>,
    max: u64,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Response<Body>> {
    if declared.is_some_and(|n| n > max) {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body exceeds {max} bytes"),
        ));
    }
    // A body of unknown length may be as large as allowed: reserve that much.
    let reserve = declared.unwrap_or(max).max(1);
    let permits = u32::try_from(reserve).unwrap_or(u32::MAX);
    let Ok(permit) = state.body_budget.clone().try_acquire_many_owned(permits) else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many request bodies in flight; retry later",
        );
        if let Ok(value) = "1".parse() {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, value);
        }
        return Err(response);
    };
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match tokio::time::timeout(
        state.limits.body_timeout,
        Limited::new(body, limit).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), permit)),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body exceeds {max} bytes"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}

/// The `content-length` a request declares, if any.
pub(crate) fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A response body: whole, or a stream (the run stream).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A whole response body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(full(format!("{body}\n")))
        .unwrap_or_default()
}

/// A JSON response; registered secret values are redacted from it, whatever
/// record or error carried them.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    // A final newline, so `curl` in a terminal leaves the prompt on its own line.
    let text = value.to_string() + "\n";
    let text = crate::redact::redact_str(&text).into_owned();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-content-type-options", "nosniff")
        .header("cache-control", "no-store")
        .body(full(text))
        .unwrap_or_default()
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Constant-time comparison for credentials.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") if state.is_ready() => text(StatusCode::OK, "ready"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(full(state.metrics.encode()))
            .unwrap_or_default(),
        (&Method::GET, "/") => ui::redirect(),
        (&Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => ui::asset(p),
        (_, p) if p.starts_with("/hooks/") => webhook::handle(&state, req).await,
        (_, p) if p.starts_with("/api/") => api::handle(&state, req).await,
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    Ok(response)
}
