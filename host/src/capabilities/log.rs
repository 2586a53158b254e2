//! `log`: guest log messages go to the host log, tagged with trigger and module.

use super::Capabilities;
use super::bindings::wasmtrigger::plugin::log::{Host, Level};

/// Longest message kept; guests cannot flood the log with one call.
const MAX_MESSAGE: usize = 16 * 1024;

impl Host for Capabilities {
    async fn log(&mut self, level: Level, message: String) {
        // Redact before cutting: a value straddling the cut would leave its first half.
        let mut message = crate::redact::redact_str(&message).into_owned();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("… [truncated]");
        }
        if let Some(trace) = &self.trace {
            let name = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            trace.log(name, &message);
        }
        let (trigger, module) = (&*self.trigger, &*self.module);
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "wasmtrigger::guest", trigger, module, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }
}
