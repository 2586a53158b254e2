//! One connection's defences against slow clients: a watchdog that closes
//! the connection when a request's headers take longer than `headerTimeout`,
//! or when it sits idle (waiting for the next request, or for the client to
//! read a response) longer than `idleTimeout`. Body reads are bounded where
//! bodies are read (`bodyTimeout`, see [`super::read_body`]).
//!
//! The watchdog sees the connection through [`Tracked`], which notes when
//! the first byte of a request arrives and when response bytes leave, and
//! through the service, which notes when a request's headers were complete
//! (hyper calls it) and when its response was handed back. A streamed
//! response (the run stream) keeps the connection in its own phase, closed
//! when no byte could be written for `idleTimeout`: the stream writes a
//! heartbeat more often than that, so only a client that stopped reading is
//! cut off.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ServerLimits;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const STREAMING: u8 = 3;

/// Where a connection is in its request cycle, and since when.
pub(super) struct Phase {
    phase: AtomicU8,
    /// Milliseconds since `origin` when the phase began.
    since_ms: AtomicU64,
    /// Milliseconds since `origin` when response bytes were last written.
    wrote_ms: AtomicU64,
    origin: Instant,
}

impl Phase {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Phase {
            phase: AtomicU8::new(IDLE),
            since_ms: AtomicU64::new(0),
            wrote_ms: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    fn set(&self, phase: u8) {
        self.since_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// Headers are complete: the service is handling the request.
    pub(super) fn busy(&self) {
        self.set(BUSY);
    }

    /// The response is handed back: the connection waits for the next request.
    pub(super) fn idle(&self) {
        self.set(IDLE);
    }

    /// The response handed back is a stream: the connection lives while it is written.
    pub(super) fn streaming(&self) {
        self.wrote();
        self.set(STREAMING);
    }

    fn wrote(&self) {
        self.wrote_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Bytes arrived: if the connection was idle, a request has begun.
    fn bytes_arrived(&self) {
        if self
            .phase
            .compare_exchange(IDLE, HEAD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.since_ms
                .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Waits until the connection has overstayed its current phase; returns
    /// what it overstayed, for the log.
    pub(super) async fn overstayed(&self, limits: &ServerLimits) -> &'static str {
        loop {
            let phase = self.phase.load(Ordering::Acquire);
            let since = if phase == STREAMING {
                self.wrote_ms.load(Ordering::Relaxed)
            } else {
                self.since_ms.load(Ordering::Relaxed)
            };
            let since = Duration::from_millis(since);
            let in_phase = self.origin.elapsed().saturating_sub(since);
            let (limit, what) = match phase {
                IDLE => (limits.idle_timeout, "idle timeout"),
                HEAD => (limits.header_timeout, "header timeout"),
                STREAMING => (limits.idle_timeout, "stream not read"),
                // The handler bounds its own body reads; check back later.
                _ => (limits.header_timeout, ""),
            };
            if !what.is_empty() && in_phase >= limit {
                return what;
            }
            let wait = if what.is_empty() {
                limit
            } else {
                limit - in_phase
            };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

/// An IO stream that tells the watchdog when request bytes arrive.
pub(super) struct Tracked<T> {
    inner: T,
    phase: Arc<Phase>,
}

impl<T> Tracked<T> {
    pub(super) fn new(inner: T, phase: Arc<Phase>) -> Self {
        Tracked { inner, phase }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.bytes_arrived();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.wrote();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.phase.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Backs off after accept errors (out of file descriptors, most often), so
/// the accept loop neither spins nor floods the log; logs at most once per
/// interval, with the number of errors since the last line.
pub(super) struct AcceptBackoff {
    delay: Duration,
    errors: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Self {
        AcceptBackoff {
            delay: Duration::ZERO,
            errors: 0,
            last_log: None,
        }
    }

    /// A connection was accepted: back to full speed.
    pub(super) fn succeeded(&mut self) {
        if self.errors > 0 && self.last_log.is_some() {
            tracing::info!(
                errors = self.errors,
                "accepting connections again after errors"
            );
        }
        self.delay = Duration::ZERO;
        self.errors = 0;
        self.last_log = None;
    }

    /// An accept failed: how long to wait before the next try.
    pub(super) fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.errors += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                error = %error,
                errors = self.errors,
                "cannot accept connections; backing off (up to 1s between tries)"
            );
            self.last_log = Some(Instant::now());
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.delay
    }
}

/// Logs refused connections (the cap is reached) at most once per interval.
pub(super) struct RefusalLog {
    count: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    pub(super) fn new() -> Self {
        RefusalLog {
            count: 0,
            last: None,
        }
    }

    pub(super) fn refused(&mut self, cap: usize) {
        self.count += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                max_connections = cap,
                refused = self.count,
                "connection limit reached: closing new connections"
            );
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}
