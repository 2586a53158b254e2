//! `type: redis-queue` sources: a stream drained through a consumer group.

use std::path::Path;

use super::super::schema::RedisQueueSpec;
use super::super::*;
use super::Loader;
use super::engine::out_of_bounds;
use crate::config::grants::check_secret_name;

impl Loader<'_> {
    pub(super) fn redis_queue(
        &mut self,
        file: &Path,
        label: &str,
        spec: RedisQueueSpec,
    ) -> Option<RedisQueueConfig> {
        let before = self.errors.len();
        let server = match (spec.url, spec.url_secret) {
            (Some(url), None) => {
                match url::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "redis" | "rediss") => {
                        if u.password().is_some() {
                            let message = "the URL holds a password: put the whole URL in a secret and use `urlSecret`".to_string();
                            self.error(file, Some(label), Some("source.url"), message);
                        }
                    }
                    _ => {
                        // Not echoed: a malformed URL may still hold a password.
                        let message =
                            "invalid Redis URL: expected redis://host[:port][/db] or rediss://…"
                                .to_string();
                        self.error(file, Some(label), Some("source.url"), message);
                    }
                }
                RedisServer::Url(url)
            }
            (None, Some(secret)) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(file, Some(label), Some("source.urlSecret"), message);
                }
                RedisServer::Secret(secret)
            }
            _ => {
                let message = "a redis-queue takes exactly one of `url` or `urlSecret`".to_string();
                self.error(file, Some(label), Some("source"), message);
                return None;
            }
        };
        if spec.stream.trim().is_empty() {
            self.error(
                file,
                Some(label),
                Some("source.stream"),
                "expected a stream key".into(),
            );
        }
        let claim_idle = spec
            .claim_idle
            .map(|d| d.0)
            .unwrap_or(std::time::Duration::from_secs(60));
        if claim_idle < std::time::Duration::from_millis(100) {
            let message =
                "expected at least 100ms: a shorter idle time steals entries from live consumers"
                    .to_string();
            self.error(file, Some(label), Some("source.claimIdle"), message);
        }
        let batch = spec.batch.unwrap_or(16);
        if !(1..=1000).contains(&batch) {
            self.error(
                file,
                Some(label),
                Some("source.batch"),
                "expected 1 to 1000".into(),
            );
        }
        let max_entry_bytes = spec.max_entry_size.map(|b| b.0).unwrap_or(1 << 20);
        for (field, message) in out_of_bounds(&[(
            "source.maxEntrySize".to_string(),
            max_entry_bytes,
            1,
            64 << 20,
            " bytes",
        )]) {
            self.error(file, Some(label), Some(&field), message);
        }
        if self.errors.len() > before {
            return None;
        }
        Some(RedisQueueConfig {
            max_entry_bytes,
            dead_letter: spec
                .dead_letter
                .unwrap_or_else(|| format!("{}:dead", spec.stream)),
            stream: spec.stream,
            group: spec.group.unwrap_or_else(|| "wasmtrigger".into()),
            consumer: spec.consumer,
            server,
            claim_idle,
            batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn a_server_a_stream_and_bounded_batches() {
        assert_problem(
            &with_source("{ type: redis-queue, stream: s }"),
            "source",
            "url",
        );
        assert_problem(
            &with_source("{ type: redis-queue, url: 'redis://h', stream: s, batch: 0 }"),
            "source.batch",
            "expected 1 to 1000",
        );
        assert_problem(
            &with_source("{ type: redis-queue, url: 'redis://h', stream: s, maxEntrySize: 1Gi }"),
            "source.maxEntrySize",
            "out of range",
        );
        loaded(&with_source(
            "{ type: redis-queue, urlSecret: redis-url, stream: jobs }",
        ));
    }
}
