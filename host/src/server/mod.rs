//! The engine's HTTP surface, one listener (`--listen`):
//!
//! - `POST /hooks/{trigger}`: webhook sources ([`webhook`]);
//! - `GET /metrics`: Prometheus/OpenMetrics text;
//! - `GET /healthz`: the process is alive; `GET /readyz`: config loaded,
//!   modules compiled, sources started;
//! - `/api/v1/...`: runs, triggers and manual firing ([`api`]), optionally
//!   behind a bearer token; the `runs`, `triggers` and `fire` commands use it.
//!
//! The listener starts before the engine so that `/readyz` can say "not yet".

mod api;

pub use api::since;
mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::task::JoinHandle;

use crate::engine::Shared;
use crate::metrics::Metrics;

/// What request handlers share.
pub struct ServerState {
    metrics: Arc<Metrics>,
    api_token: Option<String>,
    engine: OnceLock<Arc<Shared>>,
    ready: AtomicBool,
}

impl ServerState {
    /// State for a server that has no engine yet.
    pub fn new(metrics: Arc<Metrics>, api_token: Option<String>) -> Arc<Self> {
        Arc::new(ServerState {
            metrics,
            api_token,
            engine: OnceLock::new(),
            ready: AtomicBool::new(false),
        })
    }

    /// Hands the running engine to the handlers.
    pub(crate) fn attach(&self, engine: Arc<Shared>) {
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
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| route(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        tracing::info!(%addr, "HTTP server listening");
        Ok(Server { addr, task })
    }

    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// A response body.
pub(crate) type Body = Full<Bytes>;

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .unwrap_or_default()
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
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
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .unwrap_or_default(),
        (_, p) if p.starts_with("/hooks/") => webhook::handle(&state, req).await,
        (_, p) if p.starts_with("/api/") => api::handle(&state, req).await,
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    Ok(response)
}
