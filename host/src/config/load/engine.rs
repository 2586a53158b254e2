//! The `engine:` section: defaults, the one section in the files, flag and
//! environment overrides, bounds on every number, and the Trigger-object policy.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::super::schema::{EngineSpec, HttpLimitsSpec, RetrySpec};
use super::super::*;
use super::{SOURCE_TYPES, parse_each_field, parse_grants, prefixed, valid_api_version};

/// Merges defaults, the (single) `engine:` section and the overrides.
pub(super) fn engine_settings(
    documents: &[(PathBuf, Map<String, Value>)],
    overrides: &EngineOverrides,
    errors: &mut Vec<ConfigError>,
) -> EngineSettings {
    let mut settings = EngineSettings::default();
    let mut with_engine = documents.iter().filter(|(_, d)| d.contains_key("engine"));
    let first = with_engine.next();
    if let Some((file, _)) = with_engine.next() {
        errors.push(ConfigError {
            file: file.clone(),
            trigger: None,
            field: Some("engine".into()),
            message: format!(
                "`engine:` is already set in {}; set it in one file only",
                first
                    .map(|(f, _)| f.display().to_string())
                    .unwrap_or_default()
            ),
        });
    }
    let mut located = |file: &Path, field: &str, message: String| {
        errors.push(ConfigError {
            file: file.to_path_buf(),
            trigger: None,
            field: Some(field.to_string()),
            message,
        })
    };
    if let Some((file, doc)) = first {
        match parse_each_field::<EngineSpec>(doc["engine"].clone()) {
            Err(problems) => {
                for (field, message) in problems {
                    located(file, &prefixed("engine", &field), message);
                }
            }
            Ok(spec) => {
                if let Some(v) = spec.workers {
                    settings.workers = v;
                }
                if let Some(v) = spec.journal {
                    settings.journal = v;
                }
                if let Some(v) = spec.queue_size {
                    settings.queue_size = v;
                }
                if let Some(v) = spec.per_worker_qps {
                    settings.per_worker_qps = v;
                }
                if let Some(v) = spec.timeout {
                    settings.timeout = v.0;
                }
                if let Some(v) = spec.memory {
                    settings.memory = v.0;
                }
                if let Some(v) = spec.shutdown_grace {
                    settings.shutdown_grace = v.0;
                }
                if let Some(v) = spec.stdio_limit {
                    settings.stdio_limit = v.0;
                }
                if let Some(v) = spec.module_cache_size {
                    settings.module_cache_size = v.0;
                }
                if let Some(h) = &spec.http {
                    settings.http = merge_http(settings.http, h);
                }
                if let Some(secrets) = spec.secrets {
                    settings.secrets.dir = secrets.dir;
                    settings.secrets.env_prefix = secrets.env_prefix;
                    settings.secrets.kubernetes = secrets
                        .kubernetes
                        .map(|k| (k.namespace.unwrap_or_else(|| "default".into()), k.name));
                }
                if let Some(h) = &spec.history {
                    if let Some(v) = h.max_age {
                        settings.history.max_age = v.0;
                    }
                    if let Some(v) = h.max_per_trigger {
                        settings.history.max_per_trigger = v;
                    }
                    if let Some(v) = &h.max_event_size {
                        settings.history.record_event_bytes = Some(v.0);
                    }
                    if h.record == Some(false) {
                        settings.history.record_event_bytes = None;
                    }
                }
                if let Some(kv) = &spec.kv {
                    if let Some(v) = kv.max_value_size {
                        settings.kv.max_value_bytes = v.0 as usize;
                    }
                    if let Some(v) = kv.max_keys {
                        settings.kv.max_keys = v;
                    }
                }
                if let Some(r) = &spec.retry {
                    settings.retry = merge_retry(settings.retry, r);
                }
                if let Some(v) = spec.max_module_size {
                    settings.max_module_size = v.0;
                }
                if let Some(v) = spec.keep_resident {
                    settings.keep_resident = v.0;
                }
                if let Some(d) = spec.distribute {
                    settings.distribute = distribute(d, &mut |field, message| {
                        located(file, &format!("engine.distribute.{field}"), message)
                    });
                }
                if let Some(policy) = &spec.trigger_objects {
                    for (field, message) in object_policy(policy, &mut settings.trigger_objects) {
                        located(file, &field, message);
                    }
                }
                if let Some(sv) = &spec.server {
                    let l = &mut settings.server;
                    l.header_timeout = sv.header_timeout.map_or(l.header_timeout, |d| d.0);
                    l.body_timeout = sv.body_timeout.map_or(l.body_timeout, |d| d.0);
                    l.idle_timeout = sv.idle_timeout.map_or(l.idle_timeout, |d| d.0);
                    l.max_connections = sv.max_connections.unwrap_or(l.max_connections);
                    l.max_body_bytes_in_flight = sv
                        .max_body_bytes_in_flight
                        .map_or(l.max_body_bytes_in_flight, |b| b.0);
                }
            }
        }
    }
    if let Some(v) = overrides.workers {
        settings.workers = v;
    }
    if let Some(v) = overrides.queue_size {
        settings.queue_size = v;
    }
    if let Some(v) = overrides.per_worker_qps {
        settings.per_worker_qps = v;
    }
    if let Some(v) = overrides.timeout {
        settings.timeout = v;
    }
    if let Some(v) = overrides.max_retry {
        settings.retry.max = v;
    }
    if let Some(v) = overrides.retry_delay {
        settings.retry.delay = v;
    }
    if let Some(v) = &overrides.secrets_dir {
        settings.secrets.dir = Some(v.clone());
    }
    if let Some(v) = &overrides.secrets_env_prefix {
        settings.secrets.env_prefix = Some(v.clone());
    }
    let file = first.map(|(f, _)| f.clone()).unwrap_or_default();
    let checks: [(bool, &str, String); 6] = [
        (
            (1..=1024).contains(&settings.workers),
            "engine.workers",
            format!("{} workers: expected 1 to 1024", settings.workers),
        ),
        (
            settings.queue_size >= 1,
            "engine.queueSize",
            "expected a queue size of at least 1".into(),
        ),
        (
            settings.per_worker_qps.is_finite() && settings.per_worker_qps >= 0.0,
            "engine.perWorkerQps",
            format!(
                "{}: expected 0 (unlimited) or a positive number",
                settings.per_worker_qps
            ),
        ),
        (
            !settings.timeout.is_zero(),
            "engine.timeout",
            "expected a timeout above zero".into(),
        ),
        (
            (1 << 20..=MAX_MEMORY_LIMIT).contains(&settings.memory),
            "engine.memory",
            memory_message(settings.memory),
        ),
        (
            settings.retry.delay <= settings.retry.max_delay,
            "engine.retry.delay",
            "the retry delay must not exceed retry.maxDelay".into(),
        ),
    ];
    for (ok, field, message) in checks {
        if !ok {
            located(&file, field, message);
        }
    }
    for (field, message) in engine_bounds(&settings) {
        located(&file, &field, message);
    }
    settings
}

/// Bounds for a number: (field, value, min, max, unit).
pub(super) type Bound = (String, u64, u64, u64, &'static str);

pub(super) fn out_of_bounds(bounds: &[Bound]) -> Vec<(String, String)> {
    bounds
        .iter()
        .filter(|(_, v, min, max, _)| v < min || v > max)
        .map(|(field, v, min, max, unit)| {
            (
                field.clone(),
                format!("{v}{unit} is out of range: expected {min}{unit} to {max}{unit}"),
            )
        })
        .collect()
}

const SECOND_MS: u64 = 1000;
pub(super) const HOUR_MS: u64 = 3600 * SECOND_MS;

/// Every numeric engine setting has bounds, so a typo cannot ask for a
/// trillion workers, a year-long timeout or a terabyte of buffers.
fn engine_bounds(s: &EngineSettings) -> Vec<(String, String)> {
    let ms = |d: std::time::Duration| d.as_millis().min(u64::MAX as u128) as u64;
    let mut bounds: Vec<Bound> = [
        (
            "engine.queueSize".to_string(),
            s.queue_size as u64,
            1,
            1_000_000,
            "",
        ),
        (
            "engine.perWorkerQps".to_string(),
            s.per_worker_qps as u64,
            0,
            1_000_000,
            "",
        ),
        (
            "engine.timeout".to_string(),
            ms(s.timeout),
            1,
            HOUR_MS,
            "ms",
        ),
        (
            "engine.shutdownGrace".to_string(),
            ms(s.shutdown_grace),
            0,
            HOUR_MS,
            "ms",
        ),
        (
            "engine.stdioLimit".to_string(),
            s.stdio_limit,
            1,
            64 << 20,
            " bytes",
        ),
        (
            "engine.moduleCacheSize".to_string(),
            s.module_cache_size,
            0,
            64 << 30,
            " bytes",
        ),
        (
            "engine.maxModuleSize".to_string(),
            s.max_module_size,
            1024,
            1 << 30,
            " bytes",
        ),
        (
            "engine.keepResident".to_string(),
            s.keep_resident,
            0,
            64 << 20,
            " bytes",
        ),
        (
            "engine.kv.maxValueSize".to_string(),
            s.kv.max_value_bytes as u64,
            1,
            16 << 20,
            " bytes",
        ),
        (
            "engine.kv.maxKeys".to_string(),
            s.kv.max_keys,
            1,
            10_000_000,
            "",
        ),
        (
            "engine.history.maxPerTrigger".to_string(),
            s.history.max_per_trigger as u64,
            1,
            1_000_000,
            "",
        ),
        (
            "engine.history.maxEventSize".to_string(),
            s.history.record_event_bytes.unwrap_or(0),
            0,
            16 << 20,
            " bytes",
        ),
        (
            "engine.history.maxAge".to_string(),
            ms(s.history.max_age),
            1,
            3650 * 24 * HOUR_MS,
            "ms",
        ),
        (
            "engine.server.headerTimeout".to_string(),
            ms(s.server.header_timeout),
            100,
            HOUR_MS,
            "ms",
        ),
        (
            "engine.server.bodyTimeout".to_string(),
            ms(s.server.body_timeout),
            100,
            HOUR_MS,
            "ms",
        ),
        (
            "engine.server.idleTimeout".to_string(),
            ms(s.server.idle_timeout),
            100,
            HOUR_MS,
            "ms",
        ),
        (
            "engine.server.maxConnections".to_string(),
            s.server.max_connections as u64,
            1,
            1_000_000,
            "",
        ),
        (
            "engine.server.maxBodyBytesInFlight".to_string(),
            s.server.max_body_bytes_in_flight,
            64 << 10,
            16 << 30,
            " bytes",
        ),
    ]
    .into();
    bounds.extend(http_bounds("engine.http", &s.http));
    bounds.extend(retry_bounds("engine.retry", &s.retry));
    out_of_bounds(&bounds)
}

pub(super) fn http_bounds(prefix: &str, h: &HttpLimits) -> Vec<Bound> {
    let field = |f: &str| format!("{prefix}.{f}");
    vec![
        (
            field("timeout"),
            h.timeout.as_millis() as u64,
            1,
            HOUR_MS,
            "ms",
        ),
        (
            field("maxResponseSize"),
            h.max_response_bytes,
            1,
            1 << 30,
            " bytes",
        ),
        (field("maxRequests"), h.max_requests as u64, 1, 10_000, ""),
    ]
}

pub(super) fn retry_bounds(prefix: &str, r: &RetryPolicy) -> Vec<Bound> {
    let field = |f: &str| format!("{prefix}.{f}");
    vec![
        (field("max"), r.max as u64, 0, 100, ""),
        (
            field("delay"),
            r.delay.as_millis() as u64,
            0,
            24 * HOUR_MS,
            "ms",
        ),
        (
            field("maxDelay"),
            r.max_delay.as_millis() as u64,
            0,
            24 * HOUR_MS,
            "ms",
        ),
    ]
}

/// Reads `engine.triggerObjects` into `policy`; returns the problems as (field, message).
fn object_policy(
    spec: &super::schema::ObjectPolicySpec,
    policy: &mut super::policy::ObjectPolicy,
) -> Vec<(String, String)> {
    const PREFIX: &str = "engine.triggerObjects";
    let mut problems = Vec::new();
    if let Some(sources) = &spec.sources {
        for (i, s) in sources.iter().enumerate() {
            if !SOURCE_TYPES.contains(&s.as_str()) {
                problems.push((
                    format!("{PREFIX}.sources[{i}]"),
                    format!(
                        "unknown source type `{s}`; expected one of {}",
                        SOURCE_TYPES.join(", ")
                    ),
                ));
            }
        }
        policy.sources = sources.clone();
    }
    if let Some(grants) = &spec.grants {
        let (parsed, grant_problems) = parse_grants(grants, &format!("{PREFIX}.grants"));
        problems.extend(grant_problems);
        policy.grants = parsed;
    }
    for (i, w) in spec.watch.iter().enumerate() {
        if !valid_api_version(&w.api_version) {
            problems.push((
                format!("{PREFIX}.watch[{i}].apiVersion"),
                format!(
                    "invalid apiVersion `{}`: expected `v1` or `group/version`",
                    w.api_version
                ),
            ));
        }
        policy.watch.push(super::policy::WatchAllowance {
            api_version: w.api_version.clone(),
            kind: w.kind.clone(),
            namespaces: w.namespaces.clone(),
        });
    }
    problems
}

pub(super) fn memory_message(bytes: u64) -> String {
    format!(
        "{bytes} bytes: expected a memory limit between 1Mi and {}Gi",
        MAX_MEMORY_LIMIT >> 30
    )
}

pub(super) fn merge_http(base: HttpLimits, spec: &HttpLimitsSpec) -> HttpLimits {
    HttpLimits {
        timeout: spec.timeout.map(|d| d.0).unwrap_or(base.timeout),
        max_response_bytes: spec
            .max_response_size
            .map(|b| b.0)
            .unwrap_or(base.max_response_bytes),
        max_requests: spec.max_requests.unwrap_or(base.max_requests),
    }
}

pub(super) fn merge_retry(base: RetryPolicy, spec: &RetrySpec) -> RetryPolicy {
    RetryPolicy {
        max: spec.max.unwrap_or(base.max),
        delay: spec.delay.map(|d| d.0).unwrap_or(base.delay),
        max_delay: spec.max_delay.map(|d| d.0).unwrap_or(base.max_delay),
    }
}

/// `engine.distribute`, checked: one of `url` (no password in it) or
/// `urlSecret`, a prefix usable in the transport's names, a claim time that
/// does not steal from live replicas.
fn distribute(
    spec: super::super::schema::DistributeSpec,
    error: &mut dyn FnMut(&str, String),
) -> Option<DistributeSettings> {
    use super::super::schema::DistributeVia;
    let (via, schemes, expected) = match spec.via {
        DistributeVia::Redis => (
            Transport::Redis,
            &["redis", "rediss"][..],
            "redis://host[:port][/db] or rediss://…",
        ),
        DistributeVia::Nats => (
            Transport::Nats,
            &["nats", "tls"][..],
            "nats://host[:port] or tls://…",
        ),
    };
    let server = match (spec.url, spec.url_secret) {
        (Some(url), None) => {
            match url::Url::parse(&url) {
                Ok(u) if schemes.contains(&u.scheme()) => {
                    if u.password().is_some()
                        || (via == Transport::Nats && !u.username().is_empty())
                    {
                        error("url", "the URL holds credentials: put the whole URL in a secret and use `urlSecret`".into());
                    }
                }
                // Not echoed: a malformed URL may still hold a password.
                _ => error(
                    "url",
                    format!("invalid URL for `via: {}`: expected {expected}", schemes[0]),
                ),
            }
            Endpoint::Url(url)
        }
        (None, Some(secret)) => {
            if let Err(message) = crate::config::grants::check_secret_name(&secret) {
                error("urlSecret", message);
            }
            Endpoint::Secret(secret)
        }
        _ => {
            error("url", "expected exactly one of `url` or `urlSecret`".into());
            return None;
        }
    };
    let prefix = spec.prefix.unwrap_or_else(|| "wasmtrigger".into());
    // NATS stream and bucket names take neither `.` nor `:`.
    let (usable, chars): (fn(char) -> bool, &str) = match via {
        Transport::Redis => (
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'),
            "a-z A-Z 0-9 - _ . :",
        ),
        Transport::Nats => (
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'),
            "a-z A-Z 0-9 - _",
        ),
    };
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(usable) {
        error(
            "prefix",
            format!(
                "`{}` is not a prefix for `via: {}`: expected 1-64 of {chars}",
                prefix.escape_debug(),
                schemes[0]
            ),
        );
    }
    let claim_idle = spec
        .claim_idle
        .map_or(std::time::Duration::from_secs(30), |d| d.0);
    // A NATS run in progress renews its message every third of the ack wait.
    let least = match via {
        Transport::Redis => std::time::Duration::from_millis(100),
        Transport::Nats => std::time::Duration::from_secs(1),
    };
    if claim_idle < least {
        error(
            "claimIdle",
            format!(
                "expected at least {}: a shorter idle time steals entries from live replicas",
                humantime_short(least)
            ),
        );
    }
    let batch = spec.batch.unwrap_or(64);
    if !(1..=1000).contains(&batch) {
        error("batch", format!("{batch}: expected 1 to 1000"));
    }
    Some(DistributeSettings {
        via,
        server,
        prefix,
        claim_idle,
        batch,
    })
}

/// `100ms` or `1s`.
fn humantime_short(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn engine_settings_are_bounded_and_the_policy_is_read() {
        assert_problem(
            "engine: { workers: 0 }\ntriggers: []\n",
            "engine.workers",
            "expected 1 to 1024",
        );
        assert_problem(
            "engine: { queueSize: 10000000 }\ntriggers: []\n",
            "engine.queueSize",
            "out of range",
        );
        assert_problem(
            "engine: { server: { headerTimeout: 1ms } }\ntriggers: []\n",
            "engine.server.headerTimeout",
            "out of range",
        );
        assert_problem(
            "engine: { bogus: 1 }\ntriggers: []\n",
            "engine.bogus",
            "unknown field",
        );
        assert_problem(
            "engine: { triggerObjects: { sources: [telepathy] } }\ntriggers: []\n",
            "engine.triggerObjects.sources[0]",
            "unknown source type",
        );
        let config = loaded(&format!(
            "engine:\n  triggerObjects:\n    sources: [schedule]\n    grants: {{ secrets: [a-token] }}\n{}",
            with_source("{ type: schedule, every: 1m }")
        ));
        let policy = &config.engine.trigger_objects;
        assert_eq!(policy.sources, ["schedule"]);
        assert_eq!(policy.grants.secrets, ["a-token"]);
    }
}
