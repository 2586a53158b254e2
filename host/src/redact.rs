//! Keeps secret values out of everything the engine writes.
//!
//! Every secret value the process reads (a guest's `secrets.get`, a trigger's
//! `imports:`, a webhook key, the values preloaded for a config's grants) is
//! registered in one process-wide set. From then on it is replaced by
//! `[redacted]` wherever the engine writes: every log line (the log writer
//! redacts the formatted bytes), run records (output, errors, attempts — and
//! so chain data and the history), API responses, guest stdout/stderr and
//! guest log calls. A value stashed in kv by one run and printed by a later
//! one is hidden too, because the set outlives the run that read it.
//!
//! A value is registered in each form the engine itself may write it in:
//! - the value, and the value trimmed of surrounding whitespace (a Secret
//!   file usually ends in `\n`);
//! - for a multi-line value (a PEM key), each line of it as well;
//! - each of those JSON-escaped and Rust-`Debug`-escaped, as in JSON logs,
//!   records and `?`-formatted errors.
//!
//! Forms shorter than [`MIN_SECRET_CHARS`] are not registered: replacing every
//! `e` would reveal the value instead of hiding it. Reading a whole secret
//! that short is an error ([`check_length`]); a line that short inside a
//! multi-line value stays visible on its own line.
//!
//! Streams cut into pieces are cut only where [`safe_cut`] says: the last
//! bytes of a piece that could begin a value wait for the next piece, so a
//! value straddling two pieces is still found.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shortest secret value (in characters, trimmed) the engine accepts.
pub const MIN_SECRET_CHARS: usize = 6;

/// Errors when a secret value is too short to be hidden in output.
pub fn check_length(name: &str, value: &str) -> Result<(), String> {
    let chars = value.trim().chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(format!(
            "secret `{name}` is {chars} character(s) long; values shorter than {MIN_SECRET_CHARS} cannot be hidden in logs and records, so they are refused: use a longer value"
        ));
    }
    Ok(())
}

/// The registered forms and a matcher over them.
#[derive(Default)]
struct Forms {
    /// Every form, longest first.
    forms: Vec<String>,
    matcher: Option<AhoCorasick>,
    /// Length in bytes of the longest form.
    longest: usize,
}

impl Forms {
    fn rebuild(&mut self) {
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        self.longest = self.forms.first().map_or(0, String::len);
        self.matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&self.forms)
            .ok();
    }
}

/// A set of secret values to hide; [`global`] is the process's own.
#[derive(Default)]
pub struct SecretSet {
    forms: RwLock<Arc<Forms>>,
}

/// The process-wide set every output of the engine is redacted against.
pub fn global() -> &'static SecretSet {
    static SET: OnceLock<SecretSet> = OnceLock::new();
    SET.get_or_init(SecretSet::default)
}

/// The forms of one value that are long enough to hide.
fn forms_of(value: &str) -> Vec<String> {
    let mut base = vec![value.to_string(), value.trim().to_string()];
    if value.trim().contains('\n') {
        base.extend(value.lines().map(|l| l.trim().to_string()));
    }
    let mut out: Vec<String> = Vec::new();
    for form in base {
        let json = serde_json::to_string(&form).unwrap_or_default();
        let debug = format!("{form:?}");
        for f in [
            form.clone(),
            strip_quotes(&json).to_string(),
            strip_quotes(&debug).to_string(),
        ] {
            if f.chars().count() >= MIN_SECRET_CHARS && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn strip_quotes(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

impl SecretSet {
    fn current(&self) -> Arc<Forms> {
        self.forms.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers a secret value; returns whether anything new was added.
    pub fn register(&self, value: &str) -> bool {
        let new: Vec<String> = {
            let forms = self.current();
            forms_of(value)
                .into_iter()
                .filter(|f| !forms.forms.contains(f))
                .collect()
        };
        if new.is_empty() {
            return false;
        }
        let mut guard = self.forms.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Forms {
            forms: guard.forms.clone(),
            ..Forms::default()
        };
        for f in new {
            if !next.forms.contains(&f) {
                next.forms.push(f);
            }
        }
        next.rebuild();
        *guard = Arc::new(next);
        true
    }

    /// `text` with every registered form replaced.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let forms = self.current();
        let Some(matcher) = &forms.matcher else {
            return Cow::Borrowed(text);
        };
        if !matcher.is_match(text) {
            return Cow::Borrowed(text);
        }
        let replacements = vec![REDACTED; forms.forms.len()];
        Cow::Owned(matcher.replace_all(text, &replacements))
    }

    /// `bytes` with every registered form replaced.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let forms = self.current();
        let Some(matcher) = &forms.matcher else {
            return Cow::Borrowed(bytes);
        };
        if !matcher.is_match(bytes) {
            return Cow::Borrowed(bytes);
        }
        let replacements = vec![REDACTED.as_bytes(); forms.forms.len()];
        Cow::Owned(matcher.replace_all_bytes(bytes, &replacements))
    }

    /// Whether `text` holds a registered form.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.current()
            .matcher
            .as_ref()
            .is_some_and(|m| m.is_match(text))
    }

    /// Where a stream may be cut so that no registered form straddles the
    /// cut: before the last bytes that could begin one, or after a form that
    /// begins before that point and is complete in `bytes`. Bytes before the
    /// cut can be redacted and written; the rest must wait for what follows.
    pub fn safe_cut(&self, bytes: &[u8]) -> usize {
        let forms = self.current();
        let Some(matcher) = &forms.matcher else {
            return bytes.len();
        };
        let hold = forms.longest.saturating_sub(1).min(bytes.len());
        let mut cut = bytes.len() - hold;
        for m in matcher.find_iter(bytes) {
            if m.start() < cut && m.end() > cut {
                cut = m.end();
            }
        }
        cut
    }
}

/// Registers a secret value process-wide; returns whether anything new was added.
pub fn register(value: &str) -> bool {
    global().register(value)
}

/// `text` with every value registered process-wide replaced.
pub fn redact_str(text: &str) -> Cow<'_, str> {
    global().redact_str(text)
}

/// `bytes` with every value registered process-wide replaced.
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    global().redact_bytes(bytes)
}

/// Whether `text` holds a value registered process-wide.
pub fn contains_secret(text: &str) -> bool {
    global().contains_secret(text)
}

/// [`SecretSet::safe_cut`] for the process-wide set.
pub fn safe_cut(bytes: &[u8]) -> usize {
    global().safe_cut(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_registered_value_longest_first() {
        assert_eq!(redact_str("nothing here yet"), "nothing here yet");
        register("s3cr3t-unit");
        register("s3cr3t-unit-and-more");
        register("");
        assert_eq!(
            redact_str("a s3cr3t-unit-and-more b s3cr3t-unit"),
            "a [redacted] b [redacted]"
        );
        assert!(matches!(redact_str("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn trimmed_lines_and_escaped_forms_are_hidden() {
        let pem = "-----BEGIN TEST KEY-----\nMIIBunitlineoneAAAA\nMIIBunitlinetwoBBBB\n-----END TEST KEY-----\n";
        register(pem);
        let json = serde_json::json!({ "key": pem }).to_string();
        assert!(!redact_str(&json).contains("MIIBunit"), "{json}");
        let debug = format!("{pem:?}");
        assert!(!redact_str(&debug).contains("MIIBunit"));
        for line in pem.lines() {
            assert!(!redact_str(line).contains("unitline"));
        }
        register("token-with-newline\n");
        assert_eq!(redact_str("x token-with-newline y"), "x [redacted] y");
        assert_eq!(
            redact_str(r#"{"t":"token-with-newline\n"}"#),
            r#"{"t":"[redacted]"}"#
        );
    }

    #[test]
    fn short_values_are_refused_not_registered() {
        assert!(check_length("tiny", "abc\n").is_err());
        assert!(check_length("ok", "abcdef").is_ok());
        register("e");
        assert_eq!(redact_str("every e stays"), "every e stays");
    }

    #[test]
    fn a_value_split_across_pieces_is_still_hidden() {
        register("straddling-secret-42");
        let text = "before straddling-secret-42 after";
        for piece in 1..text.len() {
            // Pieces of `piece` bytes, each written up to its safe cut.
            let (mut out, mut held) = (Vec::new(), Vec::new());
            for chunk in text.as_bytes().chunks(piece) {
                held.extend_from_slice(chunk);
                let rest = held.split_off(safe_cut(&held));
                out.extend_from_slice(&redact_bytes(&held));
                held = rest;
            }
            out.extend_from_slice(&redact_bytes(&held));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "before [redacted] after",
                "pieces of {piece}"
            );
        }
    }
}
