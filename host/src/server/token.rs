//! The bearer token that guards `/api`: given as a value (`--api-token`,
//! `API_TOKEN`) or as a file (`--api-token-file`, a mounted Secret), which is
//! re-read whenever it changes, so a rotated Secret takes effect without a
//! restart and the token never shows in `ps`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::redact;

/// Where the API token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiToken {
    /// The token itself.
    Value(String),
    /// A file holding it (surrounding whitespace ignored).
    File(PathBuf),
}

/// What identifies one version of the token file.
type Stamp = (Option<SystemTime>, u64, u64);

/// The current token, re-read from its file when the file changes.
pub struct TokenSource {
    token: ApiToken,
    cached: Mutex<Option<(Stamp, String)>>,
}

/// Checks a token's text: empty or whitespace-only tokens protect nothing.
pub fn check_token(what: &str, text: &str) -> Result<String, String> {
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{what} is empty or only whitespace; it would let anyone in"
        ));
    }
    redact::check_length(what, token).map_err(|e| {
        format!("{e} (a token should be long and random, e.g. `openssl rand -hex 32`)")
    })?;
    redact::register(token);
    Ok(token.to_string())
}

impl TokenSource {
    /// Reads the token once, so that a missing or empty one stops the start.
    pub fn new(token: ApiToken) -> Result<Self, String> {
        let source = TokenSource {
            token,
            cached: Mutex::new(None),
        };
        source.read()?;
        Ok(source)
    }

    fn read(&self) -> Result<String, String> {
        match &self.token {
            ApiToken::Value(value) => check_token("the API token", value),
            ApiToken::File(path) => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("API token file {}: {e}", path.display()))?;
                let stamp = (meta.modified().ok(), meta.len(), inode(&meta));
                let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((seen, token)) = cached.as_ref()
                    && *seen == stamp
                {
                    return Ok(token.clone());
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("API token file {}: {e}", path.display()))?;
                let token = check_token(&format!("the API token in {}", path.display()), &text)?;
                if cached.is_some() {
                    tracing::info!(file = %path.display(), "API token file changed; using the new token");
                }
                *cached = Some((stamp, token.clone()));
                Ok(token)
            }
        }
    }

    /// The token now; an unreadable or empty file fails closed (None).
    pub fn current(&self) -> Option<String> {
        match self.read() {
            Ok(token) => Some(token),
            Err(e) => {
                tracing::error!(error = %e, "API token unavailable: refusing API calls");
                None
            }
        }
    }
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token-value\n").unwrap();
        let source = TokenSource::new(ApiToken::File(path.clone())).unwrap();
        assert_eq!(source.current().as_deref(), Some("first-token-value"));
        // A different length changes the stamp even within one mtime tick.
        std::fs::write(&path, "second-token-value-longer").unwrap();
        assert_eq!(
            source.current().as_deref(),
            Some("second-token-value-longer")
        );
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(source.current(), None, "an emptied file fails closed");
    }

    #[test]
    fn empty_and_short_tokens_are_refused() {
        assert!(TokenSource::new(ApiToken::Value(" \n".into())).is_err());
        assert!(TokenSource::new(ApiToken::Value("abc".into())).is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = TokenSource::new(ApiToken::File(dir.path().join("none")));
        assert!(missing.err().is_some_and(|e| e.contains("API token file")));
    }
}
