//! Log output: human-readable text or one JSON object per line, with every
//! registered secret value redacted from the formatted bytes
//! ([`crate::redact`]), whatever field or error carried it.

use std::io::Write;

use tracing_subscriber::EnvFilter;

use crate::redact;

/// Stderr, with secret values redacted from each formatted log event.
pub struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one whole event per call, so a value is never split here.
        std::io::stderr().write_all(&redact::redact_bytes(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Installs the global subscriber writing to stderr. `level` is a tracing
/// filter directive like `info` or `wasmtrigger=debug,wasmtrigger::guest=trace`.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| {
        format!("invalid log level `{level}`: {e}; expected e.g. info, debug or wasmtrigger=debug")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))?;
    // Panic messages can quote data (a caught panic in a library, a guest's
    // value): route them through the log, and so through redaction.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(target: "wasmtrigger::panic", thread, location, "panic: {message}");
    }));
    Ok(())
}
