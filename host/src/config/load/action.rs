//! A trigger's filter and action: modules (resolved inside the modules
//! directory, size-capped), params, retries, HTTP limits, secret imports and
//! grants — also the grants of the Trigger-object policy.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::super::schema::{ActionSpec, FilterSpec, GrantsSpec, HttpGrantSpec, IsolationSpec};
use super::super::*;
use super::engine::{
    HOUR_MS, http_bounds, memory_message, merge_http, merge_retry, out_of_bounds, retry_bounds,
};
use super::{Loader, valid_api_version};
use crate::config::grants::{Grants, HttpGrant, KubeGrant, check_secret_name};

impl Loader<'_> {
    pub(super) fn filter(
        &mut self,
        file: &Path,
        label: &str,
        spec: &FilterSpec,
    ) -> Option<FilterConfig> {
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

    pub(super) fn action(
        &mut self,
        file: &Path,
        label: &str,
        spec: &ActionSpec,
    ) -> Option<ActionConfig> {
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
        if let Some(builtin) = crate::builtins::named(&spec.module) {
            self.builtin_params(file, label, builtin, spec);
        }
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

    /// Checks a builtin action's params against its schema. Params that
    /// `imports` complete at run time are not there yet: they are taken as given.
    fn builtin_params(
        &mut self,
        file: &Path,
        label: &str,
        builtin: &crate::builtins::Builtin,
        spec: &ActionSpec,
    ) {
        let Ok(schema) = serde_json::from_str::<Value>(builtin.schema) else {
            return;
        };
        let mut params = match &spec.params {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v) => v.clone(),
        };
        if let (Some(imports), Some(object)) = (&spec.imports, params.as_object_mut()) {
            for param in imports.keys() {
                object
                    .entry(param.clone())
                    .or_insert_with(|| Value::String("(a secret)".into()));
            }
        }
        for (field, message) in
            crate::config::json_schema::validate(&schema, &params, "action.params")
        {
            let message = format!("{message} (params of builtin:{})", builtin.name);
            self.error(file, Some(label), Some(&field), message);
        }
    }

    pub(super) fn grants(
        &mut self,
        file: &Path,
        label: &str,
        spec: Option<&GrantsSpec>,
    ) -> Option<Grants> {
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

    pub(super) fn module_use(
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
        if crate::builtins::is_builtin(name) {
            if crate::builtins::named(name).is_none() {
                let message = crate::builtins::unknown(name);
                self.error(file, Some(label), Some(&field), message);
                return None;
            }
            // Embedded: no file, nothing to resolve or watch.
            return Some(ModuleUse {
                name: name.to_string(),
                path: PathBuf::new(),
                limits,
                isolation: Isolation::Fresh,
            });
        }
        if let Err(message) = module_name_ok(name) {
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
pub(in crate::config) fn parse_grants(
    spec: &GrantsSpec,
    prefix: &str,
) -> (Grants, Vec<(String, String)>) {
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
pub(super) fn module_name_ok(name: &str) -> Result<(), String> {
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
pub(super) fn inside(path: &Path, dir: &Path) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn with_action(action: &str) -> String {
        format!(
            "triggers:\n  - name: t\n    source: {{ type: schedule, every: 1m }}\n    action: {action}\n"
        )
    }

    #[test]
    fn modules_stay_inside_the_modules_directory() {
        assert!(module_name_ok("m.wasm").is_ok() && module_name_ok("sub/m.wasm").is_ok());
        for bad in ["../m.wasm", "/etc/passwd", "a/../../b.wasm"] {
            assert!(module_name_ok(bad).is_err(), "{bad}");
        }
        assert_problem(
            &with_action("{ module: '../x.wasm' }"),
            "action.module",
            "no `..`",
        );
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("modules");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(dir.path().join("outside.wasm"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.wasm"), inner.join("link.wasm"))
            .unwrap();
        assert!(inside(&inner.join("link.wasm"), &inner).is_err());
    }

    #[test]
    fn grants_imports_and_limits_are_checked() {
        assert_problem(
            &with_action("{ module: m.wasm, grants: { http: ['*'] } }"),
            "action.grants.http[0]",
            "lone `*`",
        );
        assert_problem(
            &with_action("{ module: m.wasm, grants: { secrets: ['.x'] } }"),
            "action.grants.secrets[0]",
            "invalid secret name",
        );
        assert_problem(
            &with_action(
                "{ module: m.wasm, grants: { kube: [ { verbs: [], apiVersion: v1, kind: Pod, namespaces: ['a/b'] } ] } }",
            ),
            "action.grants.kube[0].verbs",
            "at least one",
        );
        assert_problem(
            &with_action("{ module: m.wasm, params: [1], imports: { t: tok } }"),
            "action.params",
            "must be a mapping",
        );
        assert_problem(
            &with_action("{ module: m.wasm, timeout: 2h }"),
            "action.timeout",
            "at most 1h",
        );
        let config = loaded(&with_action(
            "{ module: m.wasm, grants: { http: ['https://a.example.com', { url: 'http://svc.local:8080', allowInternal: true }] } }",
        ));
        let http = &config.triggers[0].action.grants.http;
        assert!(!http[0].allows_internal() && http[1].allows_internal());
    }
}
