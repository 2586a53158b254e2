//! Reading trigger files and turning them into a validated [`Config`]: the
//! files and documents here, the `engine:` section in [`engine`], and each
//! part of a trigger in a file of its own — [`schedule`], [`chain`],
//! [`webhook`], [`brokers`] (redis-queue, nats, mqtt), [`kube_watch`], and the filter and action
//! with their grants in [`action`]. Every problem is recorded with its file,
//! trigger and field, and loading goes on to find the rest.

mod action;
mod brokers;
mod builtin;
mod chain;
mod engine;
mod kube_watch;
mod ordering;
mod schedule;
mod webhook;

pub(super) use action::parse_grants;
pub use builtin::builtin_kube_needs;
pub use chain::chain_errors;
use chain::{Declared, check_chains};
use engine::engine_settings;
pub use schedule::{schedule_warnings, warnings};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::schema::{ActionSpec, FilterSpec, TriggerSpec};
use super::*;

/// Source types this build knows, for error messages.
const SOURCE_TYPES: &[&str] = &[
    "schedule",
    "trigger",
    "webhook",
    "redis-queue",
    "nats",
    "mqtt",
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
            // A bare file name's directory is the working directory.
            match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            }
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
        declared: Vec::new(),
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
    let declared = ctx.declared;
    check_chains(&declared, &triggers, &mut errors);
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

/// Deserializes a value, returning the failing field's dotted path on error
/// (serde_path_to_error already ends the path with an unknown field's name).
fn parse<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, humane(&one_line(&e.inner().to_string())))
    })
}

/// Replaces the Rust type names serde puts in its messages (`expected u32`,
/// `expected struct Foo`) with words an operator knows.
fn humane(message: &str) -> String {
    let Some((lead, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a map" | "map" => "a mapping",
        "string or map" => "a string or a mapping",
        "a sequence" => "a list",
        "a boolean" => "true or false",
        other if other.starts_with("struct ") || other.starts_with("enum ") => "a mapping",
        _ => return message.to_string(),
    };
    format!("{lead}, expected {words}")
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
    /// Every trigger read, valid or not, for the checks across triggers.
    declared: Vec<Declared>,
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
        let filter = obj.remove("filter");
        let action = obj.remove("action");
        let spec = match parse::<TriggerSpec>(Value::Object(obj)) {
            Ok(spec) => Some(spec),
            Err((field, message)) => {
                self.error(file, Some(&label), Some(&field), message);
                None
            }
        };
        let filter = filter.and_then(|raw| self.part::<FilterSpec>(file, &label, "filter", raw));
        let action = match action {
            None => {
                let message = "missing field `action`; expected `action: { module: NAME.wasm }`";
                self.error(file, Some(&label), Some("action"), message.into());
                None
            }
            Some(raw) => self.part::<ActionSpec>(file, &label, "action", raw),
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
        self.declared.push(Declared {
            file: file.to_path_buf(),
            name: label.clone(),
            chain: match &source {
                Some(SourceConfig::Chain(chain)) => Some(chain.clone()),
                _ => None,
            },
        });
        let spec = spec?;
        if let Err(message) = check_name(&spec.name) {
            self.error(file, Some(&label), Some("name"), message);
        }
        let filter = filter.and_then(|f| self.filter(file, &label, &f));
        let action = action.and_then(|a| self.action(file, &label, &a));
        let source = source?;
        let ordering = self.ordering(file, &label, spec.ordering, &source);
        let action = action?;
        let shadow = spec
            .shadow
            .and_then(|s| self.shadow(file, &label, s, &action.module));
        if self.errors.len() > before {
            return None;
        }
        let ordering = ordering?;
        let trigger = TriggerConfig {
            name: spec.name,
            description: spec.description,
            file: file.to_path_buf(),
            source,
            filter,
            action,
            ordering,
            dry_run: spec.dry_run.unwrap_or(false),
            shadow,
        };
        let missing = builtin::missing_grants(&trigger);
        for (field, message) in &missing {
            self.error(file, Some(&label), Some(field), message.clone());
        }
        missing.is_empty().then_some(trigger)
    }

    /// Reads one part of a trigger (`filter`, `action`) as `S`, errors located under `key.`.
    fn part<S: DeserializeOwned>(
        &mut self,
        file: &Path,
        label: &str,
        key: &str,
        raw: Value,
    ) -> Option<S> {
        let shape = |found: &str| {
            format!("expected a mapping like `{key}: {{ module: NAME.wasm }}`, found {found}")
        };
        let message = match &raw {
            Value::Object(_) => None,
            // The commonest slip is naming the module alone: say how to write it.
            Value::String(text) => {
                let fix = if key == "filter" && !text.ends_with(".wasm") {
                    format!("filter: {{ cel: {text:?} }}")
                } else {
                    format!("{key}: {{ module: {text} }}")
                };
                Some(format!(
                    "expected a mapping, found the string {text:?}; write `{fix}`"
                ))
            }
            Value::Array(_) => Some(shape("a list")),
            Value::Null => Some(shape("nothing")),
            Value::Bool(_) | Value::Number(_) => Some(shape(&format!("`{raw}`"))),
        };
        if let Some(message) = message {
            self.error(file, Some(label), Some(key), message);
            return None;
        }
        match parse::<S>(raw) {
            Ok(spec) => Some(spec),
            Err((f, message)) => {
                let field = prefixed(key, &f);
                self.error(file, Some(label), Some(&field), message);
                None
            }
        }
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
            "nats" => self.typed_source(file, label, obj, |s, spec| {
                s.nats(file, label, spec).map(SourceConfig::Nats)
            }),
            "mqtt" => self.typed_source(file, label, obj, |s, spec| {
                s.mqtt(file, label, spec).map(SourceConfig::Mqtt)
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
        declared: Vec::new(),
    };
    match ctx.trigger(origin, 0, raw) {
        Some(trigger) if errors.is_empty() => Ok(trigger),
        _ => Err(errors),
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

/// Loading YAML text in tests: one file in a temporary directory.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// The problems of `yaml` as one config file, module files not required.
    pub fn problems(yaml: &str) -> Vec<ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, yaml).unwrap();
        match load_declarations(&path, &EngineOverrides::default()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0,
        }
    }

    /// The config `yaml` loads to, module files not required; panics on problems.
    pub fn loaded(yaml: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, yaml).unwrap();
        load_declarations(&path, &EngineOverrides::default())
            .unwrap_or_else(|e| panic!("{yaml}\n{e}"))
    }

    /// Asserts that `yaml` has a problem at `field` whose message holds `text`.
    pub fn assert_problem(yaml: &str, field: &str, text: &str) {
        let found = problems(yaml);
        assert!(
            found
                .iter()
                .any(|e| e.field.as_deref() == Some(field) && e.message.contains(text)),
            "expected {field}: {text:?} in {found:#?}"
        );
    }

    /// One trigger with `source` (a flow mapping) and a plain action.
    pub fn with_source(source: &str) -> String {
        format!("triggers:\n  - name: t\n    source: {source}\n    action: {{ module: m.wasm }}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn names_types_and_top_level_fields_are_checked() {
        assert_problem(
            "triggers:\n  - name: Bad Name\n    source: { type: schedule, every: 1m }\n    action: { module: m.wasm }\n",
            "name",
            "invalid trigger name",
        );
        assert_problem(
            &with_source("{ type: carrier-pigeon }"),
            "source.type",
            "schedule",
        );
        let found = problems("triggers: []\nextra: 1\n");
        assert!(
            found[0].message.contains("unknown top-level field `extra`"),
            "{found:#?}"
        );
        let twice = "triggers:\n  - name: t\n    source: { type: schedule, every: 1m }\n    action: { module: m.wasm }\n  - name: t\n    source: { type: schedule, every: 1m }\n    action: { module: m.wasm }\n";
        assert_problem(twice, "name", "duplicate trigger name");
    }
}
