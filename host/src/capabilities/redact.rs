//! Keeps secret values out of everything the engine writes.
//!
//! Every secret value handed to a run (read by the guest, or merged into its
//! params through `imports:`) is registered with that run's redactor, which
//! replaces it in the guest's log lines, stdout/stderr, output and errors.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The secret values of one run.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<Mutex<Vec<String>>>,
}

impl Redactor {
    /// Registers a value to hide.
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if !values.iter().any(|v| v == value) {
            values.push(value.to_string());
            // Longest first, so a secret containing another is hidden whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Whether any value is registered.
    pub fn is_empty(&self) -> bool {
        self.values.lock().map(|v| v.is_empty()).unwrap_or(false)
    }

    /// `text` with every registered value replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        if !values.iter().any(|v| text.contains(v.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for v in values.iter() {
            out = out.replace(v.as_str(), REDACTED);
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_registered_value_longest_first() {
        let r = Redactor::default();
        assert_eq!(r.redact("nothing yet"), "nothing yet");
        r.add("s3cr3t");
        r.add("s3cr3t-and-more");
        r.add("");
        assert_eq!(
            r.redact("a s3cr3t-and-more b s3cr3t"),
            "a [redacted] b [redacted]"
        );
        assert!(matches!(r.redact("clean"), Cow::Borrowed(_)));
    }
}
