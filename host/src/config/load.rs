//! Reading trigger files and turning them into a validated [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::schema::{
    ActionSpec, AuthSpec, ChainSpec, ConditionSpec, EngineSpec, FilterSpec, GrantsSpec,
    HttpGrantSpec, HttpLimitsSpec, IsolationSpec, KubeEventSpec, KubeWatchSpec, OutcomeSpec,
    OverlapSpec, RedisQueueSpec, RetrySpec, ScheduleSpec, TriggerSpec, WebhookSpec,
};
use super::*;
use crate::config::grants::{Grants, HttpGrant, KubeGrant, check_secret_name};

/// Source types this build knows, for error messages.
const SOURCE_TYPES: &[&str] = &[
    "schedule",
    "trigger",
    "webhook",
    "redis-queue",
    "kube-watch",
];

/// Loads a config file, or every `.yaml`/`.yml`/`.json` file directly in a
/// directory, applies the overrides and validates it all. Module names resolve
/// against `modules_dir`, or against the config's own directory when absent.
pub fn load(
    path: &Path,
    modules_dir: Option<&Path>,
    overrides: &EngineOverrides,
) -> Result<Config, ConfigErrors> {
    match load_partial(path, modules_dir, overrides) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// Like [`load`], but returns the valid part of the config along with every
/// problem found, so that `check` can go on to compile the valid triggers' modules.
pub fn load_partial(
    path: &Path,
    modules_dir: Option<&Path>,
    overrides: &EngineOverrides,
) -> (Option<Config>, Vec<ConfigError>) {
    load_with(path, modules_dir, overrides, true)
}

/// Like [`load`], but without looking for the module files: for commands
/// that read only what the triggers declare (`rbac`).
pub fn load_declarations(path: &Path, overrides: &EngineOverrides) -> Result<Config, ConfigErrors> {
    match load_with(path, None, overrides, false) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

fn load_with(
    path: &Path,
    modules_dir: Option<&Path>,
    overrides: &EngineOverrides,
    modules_required: bool,
) -> (Option<Config>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let files = match config_files(path) {
        Ok(files) => files,
        Err(e) => return (None, vec![e]),
    };
    let modules_dir = modules_dir.map(Path::to_path_buf).unwrap_or_else(|| {
        if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    });

    let mut documents = Vec::new();
    // What was read, so a reloader compares later versions with exactly this one.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in &files {
        match read_document(file) {
            Ok((doc, text)) => {
                std::hash::Hash::hash(file, &mut hasher);
                std::hash::Hash::hash(text.as_bytes(), &mut hasher);
                documents.push((file.clone(), doc));
            }
            Err(e) => errors.push(e),
        }
    }
    let source_hash = std::hash::Hasher::finish(&hasher);

    let engine = engine_settings(&documents, overrides, &mut errors);
    let mut ctx = Loader {
        engine: &engine,
        modules_dir: &modules_dir,
        modules_required,
        errors: &mut errors,
    };
    let mut triggers: Vec<TriggerConfig> = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (file, doc) in &documents {
        let Some(list) = doc.get("triggers") else {
            continue;
        };
        let Some(list) = list.as_array() else {
            ctx.error(
                file,
                None,
                Some("triggers"),
                "expected a list of triggers".into(),
            );
            continue;
        };
        for (index, raw) in list.iter().enumerate() {
            if let Some(trigger) = ctx.trigger(file, index, raw) {
                if let Some(first) = seen.get(&trigger.name) {
                    let message = format!(
                        "duplicate trigger name; `{}` is already defined in {}",
                        trigger.name,
                        first.display()
                    );
                    ctx.error(file, Some(&trigger.name), Some("name"), message);
                    continue;
                }
                seen.insert(trigger.name.clone(), file.clone());
                triggers.push(trigger);
            }
        }
    }
    check_chains(&triggers, &mut errors);
    if errors.is_empty() && triggers.is_empty() && !overrides.allow_no_triggers {
        errors.push(ConfigError {
            file: path.to_path_buf(),
            trigger: None,
            field: Some("triggers".into()),
            message: "no triggers defined; expected at least one entry under `triggers:`".into(),
        });
    }
    (
        Some(Config {
            engine,
            triggers,
            modules_dir,
            files,
            source_hash: Some(source_hash),
        }),
        errors,
    )
}

/// The files a config path stands for.
fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_path_buf(),
        trigger: None,
        field: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read config: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| fail(format!("cannot list directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            // Hidden entries include Kubernetes volume internals like `..data`.
            let visible = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'));
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            visible && matches!(ext, "yaml" | "yml" | "json") && p.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail(
            "no .yaml, .yml or .json files in this directory".into(),
        ));
    }
    Ok(files)
}

/// Parses one file into a JSON object (an empty file is an empty document);
/// also returns the text read.
fn read_document(file: &Path) -> Result<(Map<String, Value>, String), ConfigError> {
    let fail = |field: Option<String>, message: String| ConfigError {
        file: file.to_path_buf(),
        trigger: None,
        field,
        message,
    };
    // Refused by size before it is read (a config is small; a huge file is a mistake or worse).
    let size = std::fs::metadata(file)
        .map_err(|e| fail(None, format!("cannot read: {e}")))?
        .len();
    if size > super::document::MAX_DOCUMENT_BYTES as u64 {
        return Err(fail(
            None,
            format!(
                "the file is {size} bytes; config files may be at most {} bytes",
                super::document::MAX_DOCUMENT_BYTES
            ),
        ));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| fail(None, format!("cannot read: {e}")))?;
    let format = if file.extension().and_then(|e| e.to_str()) == Some("json") {
        "JSON"
    } else {
        "YAML"
    };
    let value =
        super::document::parse(&text).map_err(|e| fail(None, format!("invalid {format}: {e}")))?;
    let map = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        _ => {
            return Err(fail(
                None,
                "expected a mapping with `engine:` and/or `triggers:` at the top level".into(),
            ));
        }
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "engine" | "triggers"))
    {
        return Err(fail(
            Some(key.clone()),
            format!("unknown top-level field `{key}`, expected `engine` or `triggers`"),
        ));
    }
    Ok((map, text))
}

/// Merges defaults, the (single) `engine:` section and the overrides.
fn engine_settings(
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
type Bound = (String, u64, u64, u64, &'static str);

fn out_of_bounds(bounds: &[Bound]) -> Vec<(String, String)> {
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
const HOUR_MS: u64 = 3600 * SECOND_MS;

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

fn http_bounds(prefix: &str, h: &HttpLimits) -> Vec<Bound> {
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

fn retry_bounds(prefix: &str, r: &RetryPolicy) -> Vec<Bound> {
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

fn memory_message(bytes: u64) -> String {
    format!(
        "{bytes} bytes: expected a memory limit between 1Mi and {}Gi",
        MAX_MEMORY_LIMIT >> 30
    )
}

fn merge_http(base: HttpLimits, spec: &HttpLimitsSpec) -> HttpLimits {
    HttpLimits {
        timeout: spec.timeout.map(|d| d.0).unwrap_or(base.timeout),
        max_response_bytes: spec
            .max_response_size
            .map(|b| b.0)
            .unwrap_or(base.max_response_bytes),
        max_requests: spec.max_requests.unwrap_or(base.max_requests),
    }
}

fn merge_retry(base: RetryPolicy, spec: &RetrySpec) -> RetryPolicy {
    RetryPolicy {
        max: spec.max.unwrap_or(base.max),
        delay: spec.delay.map(|d| d.0).unwrap_or(base.delay),
        max_delay: spec.max_delay.map(|d| d.0).unwrap_or(base.max_delay),
    }
}

/// Deserializes a value, returning the failing field's dotted path on error
/// (serde_path_to_error already ends the path with an unknown field's name).
fn parse<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, one_line(&e.inner().to_string()))
    })
}

/// Like [`parse`] for a struct whose fields are all optional, but reports every
/// bad field rather than the first: each field is also parsed on its own.
fn parse_each_field<T: DeserializeOwned>(value: Value) -> Result<T, Vec<(String, String)>> {
    match parse::<T>(value.clone()) {
        Ok(parsed) => Ok(parsed),
        Err(first) => {
            let Value::Object(map) = value else {
                return Err(vec![first]);
            };
            let errors: Vec<_> = map
                .into_iter()
                .filter_map(|(k, v)| parse::<T>(Value::Object(Map::from_iter([(k, v)]))).err())
                .collect();
            Err(if errors.is_empty() {
                vec![first]
            } else {
                errors
            })
        }
    }
}

/// Some parsers explain with a multi-line caret diagram; a problem is one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn prefixed(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{field}"),
    }
}

/// State shared while reading the triggers of all files.
struct Loader<'a> {
    engine: &'a EngineSettings,
    modules_dir: &'a Path,
    /// Whether a module file that does not exist is an error.
    modules_required: bool,
    errors: &'a mut Vec<ConfigError>,
}

impl Loader<'_> {
    fn error(&mut self, file: &Path, trigger: Option<&str>, field: Option<&str>, message: String) {
        self.errors.push(ConfigError {
            file: file.to_path_buf(),
            trigger: trigger.map(str::to_string),
            field: field.map(str::to_string),
            message,
        });
    }

    /// Reads one trigger; records its problems and returns it only when it is valid.
    fn trigger(&mut self, file: &Path, index: usize, raw: &Value) -> Option<TriggerConfig> {
        let label = raw
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("triggers[{index}]"));
        let before = self.errors.len();
        let Some(obj) = raw.as_object() else {
            self.error(file, Some(&label), None, "expected a mapping".into());
            return None;
        };
        let mut obj = obj.clone();
        let source = obj.remove("source");
        let spec = match parse::<TriggerSpec>(Value::Object(obj)) {
            Ok(spec) => Some(spec),
            Err((field, message)) => {
                self.error(file, Some(&label), Some(&field), message);
                None
            }
        };
        let source = match source {
            None => {
                self.error(
                    file,
                    Some(&label),
                    Some("source"),
                    "missing field `source`".into(),
                );
                None
            }
            Some(raw) => self.source(file, &label, raw),
        };
        let spec = spec?;
        if let Err(message) = check_name(&spec.name) {
            self.error(file, Some(&label), Some("name"), message);
        }
        let filter = spec
            .filter
            .as_ref()
            .and_then(|f| self.filter(file, &label, f));
        let action = self.action(file, &label, &spec.action);
        let source = source?;
        let action = action?;
        if self.errors.len() > before {
            return None;
        }
        Some(TriggerConfig {
            name: spec.name,
            description: spec.description,
            file: file.to_path_buf(),
            source,
            filter,
            action,
        })
    }

    /// Reads a source's fields as `S` (errors located under `source.`) and builds it.
    fn typed_source<S: DeserializeOwned>(
        &mut self,
        file: &Path,
        label: &str,
        obj: Value,
        build: impl FnOnce(&mut Self, S) -> Option<SourceConfig>,
    ) -> Option<SourceConfig> {
        match parse::<S>(obj) {
            Ok(spec) => build(self, spec),
            Err((f, message)) => {
                self.error(file, Some(label), Some(&prefixed("source", &f)), message);
                None
            }
        }
    }

    fn source(&mut self, file: &Path, label: &str, raw: Value) -> Option<SourceConfig> {
        let Value::Object(mut obj) = raw else {
            self.error(
                file,
                Some(label),
                Some("source"),
                "expected a mapping with a `type`".into(),
            );
            return None;
        };
        let kind = match obj.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => {
                let message = format!(
                    "missing `type`; expected one of: {}",
                    SOURCE_TYPES.join(", ")
                );
                self.error(file, Some(label), Some("source.type"), message);
                return None;
            }
        };
        let obj = Value::Object(obj);
        match kind.as_str() {
            "schedule" => self.typed_source(file, label, obj, |s, spec| {
                s.schedule(file, label, spec).map(SourceConfig::Schedule)
            }),
            "trigger" => self.typed_source(file, label, obj, |s, spec| {
                s.chain(file, label, spec).map(SourceConfig::Chain)
            }),
            "kube-watch" => self.typed_source(file, label, obj, |s, spec| {
                s.kube_watch(file, label, spec).map(SourceConfig::KubeWatch)
            }),
            "redis-queue" => self.typed_source(file, label, obj, |s, spec| {
                s.redis_queue(file, label, spec)
                    .map(SourceConfig::RedisQueue)
            }),
            "webhook" => self.typed_source(file, label, obj, |s, spec| {
                s.webhook(file, label, spec).map(SourceConfig::Webhook)
            }),
            other => {
                let message = format!(
                    "unknown source type `{other}`, expected one of: {}",
                    SOURCE_TYPES.join(", ")
                );
                self.error(file, Some(label), Some("source.type"), message);
                None
            }
        }
    }

    fn chain(&mut self, file: &Path, label: &str, spec: ChainSpec) -> Option<ChainConfig> {
        let outcomes = |on: Option<Vec<OutcomeSpec>>| -> Vec<Outcome> {
            let mut list: Vec<Outcome> = on
                .unwrap_or_else(|| vec![OutcomeSpec::Success])
                .into_iter()
                .map(|o| match o {
                    OutcomeSpec::Success => Outcome::Success,
                    OutcomeSpec::Failure => Outcome::Failure,
                })
                .collect();
            list.dedup();
            list
        };
        let condition = |c: ConditionSpec| ChainCondition {
            of: c.of,
            on: outcomes(c.on),
        };
        let (mode, conditions, field) = match (spec.of, spec.all, spec.any) {
            (Some(of), None, None) => (
                ChainMode::Any,
                vec![ChainCondition {
                    of,
                    on: outcomes(spec.on),
                }],
                "source.of",
            ),
            (None, Some(all), None) if spec.on.is_none() => (
                ChainMode::All,
                all.into_iter().map(condition).collect(),
                "source.all",
            ),
            (None, None, Some(any)) if spec.on.is_none() => (
                ChainMode::Any,
                any.into_iter().map(condition).collect(),
                "source.any",
            ),
            _ => {
                let message = "a trigger source takes exactly one of `of` (with optional `on`), `all` or `any`".to_string();
                self.error(file, Some(label), Some("source"), message);
                return None;
            }
        };
        if conditions.is_empty() {
            self.error(
                file,
                Some(label),
                Some(field),
                "expected at least one upstream condition".into(),
            );
            return None;
        }
        if spec.window.is_some() && mode != ChainMode::All {
            self.error(
                file,
                Some(label),
                Some("source.window"),
                "`window` only applies to `all`".into(),
            );
            return None;
        }
        let window = spec
            .window
            .map(|w| w.0)
            .unwrap_or(std::time::Duration::from_secs(600));
        if window.is_zero() {
            self.error(
                file,
                Some(label),
                Some("source.window"),
                "expected a window above zero".into(),
            );
            return None;
        }
        Some(ChainConfig {
            mode,
            conditions,
            window,
        })
    }

    fn kube_watch(
        &mut self,
        file: &Path,
        label: &str,
        spec: KubeWatchSpec,
    ) -> Option<KubeWatchConfig> {
        let before = self.errors.len();
        if !valid_api_version(&spec.api_version) {
            let message = format!(
                "invalid apiVersion `{}`: expected `v1` or `group/version`, like apps/v1",
                spec.api_version
            );
            self.error(file, Some(label), Some("source.apiVersion"), message);
        }
        if spec.kind.is_empty() || !spec.kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            let message = format!(
                "invalid kind `{}`: expected a kind like Deployment",
                spec.kind
            );
            self.error(file, Some(label), Some("source.kind"), message);
        }
        let namespaces = match (spec.namespace, spec.namespaces) {
            (Some(_), Some(_)) => {
                let message = "give `namespace` or `namespaces`, not both".to_string();
                self.error(file, Some(label), Some("source.namespaces"), message);
                Vec::new()
            }
            (Some(ns), None) if ns == "*" => Vec::new(),
            (Some(ns), None) => vec![ns],
            (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        for ns in &namespaces {
            if let Err(message) = crate::config::grants::check_namespace(ns) {
                self.error(file, Some(label), Some("source.namespaces"), message);
            }
        }
        if let Some(selector) = spec.label_selector.as_deref().filter(|s| !s.is_empty())
            && let Err(message) = crate::config::grants::check_label_selector(selector)
        {
            self.error(file, Some(label), Some("source.labelSelector"), message);
        }
        let events = match spec.events {
            None => vec![KubeEvent::Create, KubeEvent::Update, KubeEvent::Delete],
            Some(list) if list.is_empty() => {
                self.error(
                    file,
                    Some(label),
                    Some("source.events"),
                    "expected at least one of create, update, delete".into(),
                );
                Vec::new()
            }
            Some(list) => {
                let mut events: Vec<KubeEvent> = list
                    .into_iter()
                    .map(|e| match e {
                        KubeEventSpec::Create => KubeEvent::Create,
                        KubeEventSpec::Update => KubeEvent::Update,
                        KubeEventSpec::Delete => KubeEvent::Delete,
                    })
                    .collect();
                events.dedup();
                events
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(KubeWatchConfig {
            api_version: spec.api_version,
            kind: spec.kind,
            namespaces,
            label_selector: spec.label_selector.filter(|s| !s.is_empty()),
            field_selector: spec.field_selector.filter(|s| !s.is_empty()),
            events,
            initial: spec.initial.unwrap_or(false),
            skip_noise: spec.skip_noise.unwrap_or(false),
        })
    }

    fn redis_queue(
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

    fn webhook(&mut self, file: &Path, label: &str, spec: WebhookSpec) -> Option<WebhookConfig> {
        let before = self.errors.len();
        let auth = match spec.auth {
            None => {
                let message = "a webhook needs `auth`: `{bearer: {secret: NAME}}`, `{hmac: {secret: NAME}}`, or `none` to accept anyone".to_string();
                self.error(file, Some(label), Some("source.auth"), message);
                WebhookAuth::None
            }
            Some(AuthSpec::None) => WebhookAuth::None,
            Some(AuthSpec::Bearer { secret }) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(
                        file,
                        Some(label),
                        Some("source.auth.bearer.secret"),
                        message,
                    );
                }
                WebhookAuth::Bearer { secret }
            }
            Some(AuthSpec::Hmac {
                secret,
                header,
                prefix,
            }) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(file, Some(label), Some("source.auth.hmac.secret"), message);
                }
                WebhookAuth::Hmac {
                    secret,
                    header: header
                        .unwrap_or_else(|| "x-hub-signature-256".into())
                        .to_ascii_lowercase(),
                    prefix: prefix.unwrap_or_else(|| "sha256=".into()),
                }
            }
        };
        let mut headers = Vec::new();
        for (i, h) in spec.headers.unwrap_or_default().into_iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                let message = format!("`{h}` is not a header name");
                self.error(
                    file,
                    Some(label),
                    Some(&format!("source.headers[{i}]")),
                    message,
                );
            }
            headers.push(lower);
        }
        let max_body_bytes = spec.max_body_size.map(|b| b.0).unwrap_or(1 << 20);
        for (field, message) in out_of_bounds(&[(
            "source.maxBodySize".to_string(),
            max_body_bytes,
            1,
            64 << 20,
            " bytes",
        )]) {
            self.error(file, Some(label), Some(&field), message);
        }
        (self.errors.len() == before).then_some(WebhookConfig {
            auth,
            headers,
            max_body_bytes,
        })
    }

    fn schedule(&mut self, file: &Path, label: &str, spec: ScheduleSpec) -> Option<ScheduleConfig> {
        let chosen: Vec<&str> = [
            ("cron", spec.cron.is_some()),
            ("every", spec.every.is_some()),
            ("at", spec.at.is_some()),
            ("now", spec.now == Some(true)),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
        if chosen.len() != 1 {
            let message = if chosen.is_empty() {
                "a schedule needs exactly one of `cron`, `every`, `at` or `now: true`".to_string()
            } else {
                format!(
                    "a schedule takes exactly one of `cron`, `every`, `at` or `now`, found {}",
                    chosen.join(" and ")
                )
            };
            self.error(file, Some(label), Some("source"), message);
            return None;
        }
        let mut misplaced = |field: &str, belongs: &str| {
            let message = format!("`{field}` only applies to `{belongs}` schedules");
            self.error(file, Some(label), Some(&format!("source.{field}")), message);
        };
        if spec.timezone.is_some() && spec.cron.is_none() {
            misplaced("timezone", "cron");
        }
        if spec.immediately.is_some() && spec.every.is_none() {
            misplaced("immediately", "every");
        }
        let mode = if let Some(text) = &spec.cron {
            match CronSchedule::parse(text) {
                Ok(schedule) => ScheduleMode::Cron {
                    schedule,
                    timezone: spec.timezone.map(|t| t.0).unwrap_or(chrono_tz::UTC),
                },
                Err(message) => {
                    self.error(file, Some(label), Some("source.cron"), message);
                    return None;
                }
            }
        } else if let Some(period) = spec.every {
            if period.0 < std::time::Duration::from_millis(1) {
                self.error(
                    file,
                    Some(label),
                    Some("source.every"),
                    "expected a period of at least 1ms".into(),
                );
                return None;
            }
            ScheduleMode::Every {
                period: period.0,
                immediately: spec.immediately.unwrap_or(false),
            }
        } else if let Some(at) = spec.at {
            ScheduleMode::At(at.0)
        } else {
            ScheduleMode::Now
        };
        if let (ScheduleMode::At(at), Some(until)) = (&mode, spec.until)
            && until.0 <= *at
        {
            self.error(
                file,
                Some(label),
                Some("source.until"),
                "`until` is not after `at`; the schedule would never fire".into(),
            );
            return None;
        }
        Some(ScheduleConfig {
            mode,
            until: spec.until.map(|t| t.0),
            overlap: match spec.overlap.unwrap_or(OverlapSpec::Skip) {
                OverlapSpec::Skip => Overlap::Skip,
                OverlapSpec::Coalesce => Overlap::Coalesce,
            },
        })
    }

    fn filter(&mut self, file: &Path, label: &str, spec: &FilterSpec) -> Option<FilterConfig> {
        match (&spec.module, &spec.cel) {
            (Some(_), Some(_)) | (None, None) => {
                let message = "a filter takes exactly one of `module` or `cel`".to_string();
                self.error(file, Some(label), Some("filter"), message);
                None
            }
            (None, Some(expr)) => {
                if spec.timeout.is_some() || spec.memory.is_some() || spec.isolation.is_some() {
                    let message =
                        "`timeout`, `memory` and `isolation` apply to filter modules, not to `cel`"
                            .to_string();
                    self.error(file, Some(label), Some("filter"), message);
                }
                match CelFilter::compile(expr) {
                    Ok(cel) => Some(FilterConfig::Cel(cel)),
                    Err(message) => {
                        self.error(file, Some(label), Some("filter.cel"), message);
                        None
                    }
                }
            }
            (Some(module), None) => self
                .module_use(file, label, "filter", module, spec.timeout, spec.memory)
                .map(|used| {
                    FilterConfig::Module(ModuleUse {
                        isolation: match spec.isolation {
                            None | Some(IsolationSpec::Fresh) => Isolation::Fresh,
                            Some(IsolationSpec::Pooled) => Isolation::Pooled,
                        },
                        ..used
                    })
                }),
        }
    }

    fn action(&mut self, file: &Path, label: &str, spec: &ActionSpec) -> Option<ActionConfig> {
        let module = self.module_use(
            file,
            label,
            "action",
            &spec.module,
            spec.timeout,
            spec.memory,
        );
        let params = match &spec.params {
            None | Some(Value::Null) => "{}".to_string(),
            Some(v) => v.to_string(),
        };
        let retry = match &spec.retry {
            None => self.engine.retry,
            Some(r) => merge_retry(self.engine.retry, r),
        };
        if retry.delay > retry.max_delay {
            let message = format!(
                "retry delay {:?} exceeds maxDelay {:?}",
                retry.delay, retry.max_delay
            );
            self.error(file, Some(label), Some("action.retry.delay"), message);
            return None;
        }
        let http = match &spec.http {
            None => self.engine.http,
            Some(h) => merge_http(self.engine.http, h),
        };
        let mut bounds = http_bounds("action.http", &http);
        bounds.extend(retry_bounds("action.retry", &retry));
        for (field, message) in out_of_bounds(&bounds) {
            self.error(file, Some(label), Some(&field), message);
        }
        let grants = self.grants(file, label, spec.grants.as_ref());
        let mut imports = Vec::new();
        if let Some(map) = &spec.imports {
            if !matches!(
                spec.params,
                None | Some(Value::Null) | Some(Value::Object(_))
            ) {
                let message =
                    "`imports` are merged into params, so params must be a mapping".to_string();
                self.error(file, Some(label), Some("action.params"), message);
            }
            for (param, secret) in map {
                if let Err(message) = check_secret_name(secret) {
                    let field = format!("action.imports.{param}");
                    self.error(file, Some(label), Some(&field), message);
                }
                imports.push((param.clone(), secret.clone()));
            }
        }
        Some(ActionConfig {
            module: module?,
            params,
            retry,
            grants: grants?,
            http,
            imports,
        })
    }

    fn grants(&mut self, file: &Path, label: &str, spec: Option<&GrantsSpec>) -> Option<Grants> {
        let Some(spec) = spec else {
            return Some(Grants::default());
        };
        let (grants, problems) = parse_grants(spec, "action.grants");
        let ok = problems.is_empty();
        for (field, message) in problems {
            self.error(file, Some(label), Some(&field), message);
        }
        ok.then_some(grants)
    }

    fn module_use(
        &mut self,
        file: &Path,
        label: &str,
        section: &str,
        name: &str,
        timeout: Option<values::DurationValue>,
        memory: Option<values::ByteSize>,
    ) -> Option<ModuleUse> {
        let field = format!("{section}.module");
        if name.trim().is_empty() {
            self.error(
                file,
                Some(label),
                Some(&field),
                "expected a module file name like counter.wasm".into(),
            );
            return None;
        }
        let limits = Limits {
            timeout: timeout.map(|t| t.0).unwrap_or(self.engine.timeout),
            memory: memory.map(|m| m.0).unwrap_or(self.engine.memory),
        };
        if limits.timeout.is_zero() || limits.timeout.as_millis() > HOUR_MS as u128 {
            self.error(
                file,
                Some(label),
                Some(&format!("{section}.timeout")),
                "expected a timeout above zero and at most 1h".into(),
            );
        }
        if !(1 << 20..=MAX_MEMORY_LIMIT).contains(&limits.memory) {
            self.error(
                file,
                Some(label),
                Some(&format!("{section}.memory")),
                memory_message(limits.memory),
            );
        }
        if let Err(message) = module_name(name) {
            self.error(file, Some(label), Some(&field), message);
            return None;
        }
        let path = self.modules_dir.join(name);
        if self.modules_required && !path.is_file() {
            let message = format!(
                "module `{name}` not found at {} (modules are resolved against {})",
                path.display(),
                self.modules_dir.display()
            );
            self.error(file, Some(label), Some(&field), message);
            return None;
        }
        if self.modules_required {
            if let Err(message) = inside(&path, self.modules_dir) {
                let message = format!("module `{name}`: {message}");
                self.error(file, Some(label), Some(&field), message);
                return None;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > self.engine.max_module_size {
                let message = format!(
                    "module `{name}` is {size} bytes; modules may be at most {} bytes (engine.maxModuleSize)",
                    self.engine.max_module_size
                );
                self.error(file, Some(label), Some(&field), message);
                return None;
            }
        }
        Some(ModuleUse {
            name: name.to_string(),
            path,
            limits,
            isolation: Isolation::Fresh,
        })
    }
}

/// Parses a `grants:` block (an action's, or the Trigger-object policy's),
/// returning the problems as (field under `prefix`, message).
pub(super) fn parse_grants(spec: &GrantsSpec, prefix: &str) -> (Grants, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut grants = Grants::default();
    for (i, entry) in spec.http.iter().enumerate() {
        let (text, internal) = match entry {
            HttpGrantSpec::Pattern(text) => (text.as_str(), false),
            HttpGrantSpec::Detailed {
                url,
                allow_internal,
            } => (url.as_str(), *allow_internal),
        };
        match HttpGrant::parse(text) {
            Ok(g) => grants.http.push(g.allowing_internal(internal)),
            Err(message) => problems.push((format!("{prefix}.http[{i}]"), message)),
        }
    }
    for (i, name) in spec.secrets.iter().enumerate() {
        match check_secret_name(name) {
            Ok(()) => grants.secrets.push(name.clone()),
            Err(message) => problems.push((format!("{prefix}.secrets[{i}]"), message)),
        }
    }
    for (i, g) in spec.kube.iter().enumerate() {
        let field = |f: &str| format!("{prefix}.kube[{i}].{f}");
        if g.verbs.is_empty() {
            let message =
                "expected at least one of get, list, create, apply, patch, delete".to_string();
            problems.push((field("verbs"), message));
        }
        if !valid_api_version(&g.api_version) {
            let message = format!(
                "invalid apiVersion `{}`: expected `v1` or `group/version`, like apps/v1",
                g.api_version
            );
            problems.push((field("apiVersion"), message));
        }
        if !g.kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            let message = format!("invalid kind `{}`: expected a kind like Deployment", g.kind);
            problems.push((field("kind"), message));
        }
        for (j, ns) in g.namespaces.iter().enumerate() {
            if ns != "*"
                && let Err(why) = crate::config::grants::check_namespace(ns)
            {
                problems.push((format!("{prefix}.kube[{i}].namespaces[{j}]"), why));
            }
        }
        for (j, name) in g.names.iter().enumerate() {
            if let Err(why) = crate::config::grants::check_object_name(name) {
                problems.push((format!("{prefix}.kube[{i}].names[{j}]"), why));
            }
        }
        grants.kube.push(KubeGrant {
            verbs: g.verbs.clone(),
            api_version: g.api_version.clone(),
            kind: g.kind.clone(),
            namespaces: g.namespaces.clone(),
            names: g.names.clone(),
        });
    }
    (grants, problems)
}

/// A module name is a path relative to the modules directory, without `..`.
fn module_name(name: &str) -> Result<(), String> {
    let path = Path::new(name);
    let escapes = path.is_absolute()
        || path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if escapes {
        return Err(format!(
            "module `{name}` must be a file name in the modules directory (no absolute path, no `..`)"
        ));
    }
    Ok(())
}

/// Checks that `path`, with symlinks resolved, is inside `dir`.
fn inside(path: &Path, dir: &Path) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let root = dir.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the modules directory {}: {e}",
            dir.display()
        )
    })?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(format!(
            "resolves to {}, outside the modules directory {} (through a symlink); modules must stay inside it",
            real.display(),
            root.display()
        ))
    }
}

/// `v1` or `group/version` with a version starting with `v`.
fn valid_api_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    matches!(parts.as_slice(), [v] | [_, v] if v.starts_with('v'))
        && parts.iter().all(|p| !p.is_empty())
}

/// Validates one trigger entry from outside the files (a Trigger object's
/// spec, `origin` naming it) with the engine settings and modules directory
/// of an already loaded config. Chains are checked separately, on the whole set.
pub fn load_trigger(
    raw: &Value,
    origin: &Path,
    config: &Config,
) -> Result<TriggerConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut ctx = Loader {
        engine: &config.engine,
        modules_dir: &config.modules_dir,
        modules_required: true,
        errors: &mut errors,
    };
    match ctx.trigger(origin, 0, raw) {
        Some(trigger) if errors.is_empty() => Ok(trigger),
        _ => Err(errors),
    }
}

/// The chain problems of a set of triggers (unknown upstreams, cycles).
pub fn chain_errors(triggers: &[TriggerConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    check_chains(triggers, &mut errors);
    errors
}

/// Chains must name existing triggers and must not form a cycle: a chain that
/// can reach itself could run forever (retrying a failed run is `retry:`'s job).
fn check_chains(triggers: &[TriggerConfig], errors: &mut Vec<ConfigError>) {
    let names: std::collections::HashSet<&str> = triggers.iter().map(|t| t.name.as_str()).collect();
    let mut upstreams: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in triggers {
        let SourceConfig::Chain(chain) = &t.source else {
            continue;
        };
        for (i, c) in chain.conditions.iter().enumerate() {
            if !names.contains(c.of.as_str()) {
                let field = if chain.conditions.len() == 1 && chain.mode == ChainMode::Any {
                    "source.of".to_string()
                } else {
                    format!(
                        "source.{}[{i}].of",
                        if chain.mode == ChainMode::All {
                            "all"
                        } else {
                            "any"
                        }
                    )
                };
                errors.push(ConfigError {
                    file: t.file.clone(),
                    trigger: Some(t.name.clone()),
                    field: Some(field),
                    message: format!("no trigger named `{}` to chain on", c.of),
                });
            }
            upstreams
                .entry(t.name.as_str())
                .or_default()
                .push(c.of.as_str());
        }
    }
    // Depth-first search from each trigger along its upstreams; reaching the start again is a cycle.
    let mut reported: std::collections::HashSet<Vec<&str>> = std::collections::HashSet::new();
    for t in triggers {
        let start = t.name.as_str();
        let mut stack: Vec<Vec<&str>> = vec![vec![start]];
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap_or(&start);
            for up in upstreams.get(last).into_iter().flatten() {
                if *up == start {
                    let mut cycle: Vec<&str> = path.iter().rev().copied().collect();
                    cycle.push(cycle[0]);
                    let mut key = cycle[..cycle.len() - 1].to_vec();
                    key.sort();
                    if reported.insert(key) {
                        let message = if cycle.len() == 2 {
                            format!(
                                "`{start}` chains on itself, so it could run forever; to retry failed runs use `action.retry`"
                            )
                        } else {
                            format!(
                                "chain cycle {}: it could run forever; break the cycle (to retry failed runs use `action.retry`)",
                                cycle.join(" -> ")
                            )
                        };
                        errors.push(ConfigError {
                            file: t.file.clone(),
                            trigger: Some(start.to_string()),
                            field: Some("source".into()),
                            message,
                        });
                    }
                } else if seen.insert(*up) {
                    let mut next = path.clone();
                    next.push(up);
                    stack.push(next);
                }
            }
        }
    }
}

/// Trigger names appear in URLs, metrics and storage keys: keep them simple.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid trigger name `{name}`: expected 1-63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}
