//! Guest stdout/stderr: forwarded line by line to the host log, tagged with
//! the trigger and module, and capped per invocation.
//!
//! A guest that writes past the cap is trapped on the spot, so a runaway
//! printer costs one failed run, not the host's log volume or memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::redact;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line forwarded as one log record; longer lines are split.
const MAX_LINE: usize = 8 * 1024;
/// Stderr lines kept for error messages.
const TAIL_LINES: usize = 3;
/// Longest stderr tail quoted in an error.
const MAX_TAIL: usize = 600;

/// Output state shared by the stdout and stderr of one invocation.
pub struct GuestOutput {
    trigger: Arc<str>,
    module: Arc<str>,
    limit: u64,
    written: AtomicU64,
    exceeded: AtomicBool,
    stdout_line: Mutex<Vec<u8>>,
    stderr_line: Mutex<Vec<u8>>,
    /// The last few stderr lines, quoted in trap errors (a panic message, usually).
    stderr_tail: Mutex<VecDeque<String>>,
}

/// Which of the two streams a handle writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Guest stdout.
    Stdout,
    /// Guest stderr.
    Stderr,
}

impl GuestOutput {
    /// Creates the shared state for one invocation.
    pub fn new(trigger: Arc<str>, module: Arc<str>, limit: u64) -> Arc<Self> {
        Arc::new(GuestOutput {
            trigger,
            module,
            limit,
            written: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            stdout_line: Mutex::new(Vec::new()),
            stderr_line: Mutex::new(Vec::new()),
            stderr_tail: Mutex::new(VecDeque::new()),
        })
    }

    /// A WASI stream handle for one of the two streams.
    pub fn stream(self: &Arc<Self>, stream: Stream) -> GuestStream {
        GuestStream {
            out: self.clone(),
            stream,
        }
    }

    /// Whether the guest tried to write past the cap.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The cap in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The last lines the guest wrote to stderr, joined with ` | `, if any.
    pub fn stderr_tail(&self) -> Option<String> {
        let tail = lock(&self.stderr_tail);
        if tail.is_empty() {
            return None;
        }
        let joined = tail
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ");
        Some(crate::runs::cap_text(joined, MAX_TAIL))
    }

    /// What the guest's own code reported on stderr before trapping, as the
    /// lead of the run's error: `raised ValueError: boom` for a Python
    /// traceback (whose runtime then panics), else a Rust panic as
    /// `panicked at src/lib.rs:15:54: event has no name`.
    pub fn failure_lead(&self) -> Option<String> {
        let tail = lock(&self.stderr_tail);
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        let at = lines.iter().position(|l| l.contains("panicked at "))?;
        // componentize-py prints the traceback, then its runtime panics with this.
        let python = lines[at..]
            .iter()
            .any(|l| l.contains("Python function threw an unexpected exception"))
            || lines[..at]
                .iter()
                .any(|l| l.starts_with("Traceback (most recent call last)"));
        if python {
            // The traceback's last line is the exception; the panic after it
            // is componentize-py's own.
            let exception = lines[..at].iter().rev().find(|l| !l.starts_with(' '))?;
            return Some(format!("raised {}", exception.trim()));
        }
        let after = lines[at].split_once("panicked at ")?.1.trim();
        // Current Rust prints `panicked at LOC:` and the message on the next
        // line; older Rust put both on one line.
        let message: Vec<&str> = lines[at + 1..]
            .iter()
            .map(|l| l.trim())
            .take_while(|l| !l.starts_with("note: "))
            .filter(|l| !l.is_empty())
            .collect();
        Some(match after.strip_suffix(':') {
            Some(location) if !message.is_empty() => {
                format!("panicked at {location}: {}", message.join(" "))
            }
            _ => format!("panicked at {after}"),
        })
    }

    /// Starts a new invocation on a reused instance: a fresh output budget and stderr tail.
    pub fn reset(&self) {
        self.written.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        lock(&self.stderr_tail).clear();
    }

    /// Emits unterminated output left in the buffers; call when the invocation ends.
    pub fn finish(&self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut *lock(self.buffer(stream)));
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
    }

    fn buffer(&self, stream: Stream) -> &Mutex<Vec<u8>> {
        match stream {
            Stream::Stdout => &self.stdout_line,
            Stream::Stderr => &self.stderr_line,
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), String> {
        let before = self
            .written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if before + bytes.len() as u64 > self.limit {
            if !self.exceeded.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "wasmtrigger::guest",
                    trigger = %self.trigger,
                    module = %self.module,
                    limit = self.limit,
                    "guest output limit reached; stopping the guest"
                );
            }
            return Err(format!(
                "guest wrote more than {} bytes to stdout/stderr",
                self.limit
            ));
        }
        let mut buf = lock(self.buffer(stream));
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            buf.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                let line = std::mem::take(&mut *buf);
                self.emit(stream, &line);
            } else if buf.len() >= MAX_LINE {
                // Split a long line only where no secret value can straddle the split.
                let cut = redact::safe_cut(&buf);
                if cut > 0 {
                    let rest = buf.split_off(cut);
                    let piece = std::mem::replace(&mut *buf, rest);
                    self.emit(stream, &piece);
                }
            }
        }
        Ok(())
    }

    fn emit(&self, stream: Stream, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = redact::redact_str(&text);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return;
        }
        match stream {
            Stream::Stdout => tracing::info!(
                target: "wasmtrigger::guest",
                trigger = %self.trigger,
                module = %self.module,
                stream = "stdout",
                "{line}"
            ),
            Stream::Stderr => {
                tracing::warn!(
                    target: "wasmtrigger::guest",
                    trigger = %self.trigger,
                    module = %self.module,
                    stream = "stderr",
                    "{line}"
                );
                // Rust's panic hint names an env var guests cannot see: not worth quoting.
                if !line.starts_with("note: run with `RUST_BACKTRACE") {
                    let mut tail = lock(&self.stderr_tail);
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_string());
                }
            }
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One stream of a [`GuestOutput`], as handed to WASI.
#[derive(Clone)]
pub struct GuestStream {
    out: Arc<GuestOutput>,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.out
            .write(self.stream, &bytes)
            .map_err(|e| StreamError::Trap(wasmtime::format_err!(e)))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.out
                .write(self.stream, buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(stderr: &str) -> Option<String> {
        let out = GuestOutput::new("t".into(), "m".into(), 1 << 20);
        out.write(Stream::Stderr, stderr.as_bytes()).unwrap();
        out.failure_lead()
    }

    #[test]
    fn the_authors_words_lead_the_error() {
        // Rust since 1.73: location, then the message on its own line.
        assert_eq!(
            lead("thread '<unnamed>' panicked at src/lib.rs:15:54:\nevent has no name\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n")
                .as_deref(),
            Some("panicked at src/lib.rs:15:54: event has no name")
        );
        // componentize-py: the exception, not its runtime's panic.
        assert_eq!(
            lead("Traceback (most recent call last):\n  File \"/0/app.py\", line 21, in run\nValueError: boom\nthread '<unnamed>' panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n")
                .as_deref(),
            Some("raised ValueError: boom")
        );
        assert_eq!(lead("just a log line\n"), None);
    }
}
