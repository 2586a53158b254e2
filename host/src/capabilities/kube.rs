//! `kube`: the Kubernetes API for actions, under `grants.kube`. A call is
//! checked against the trigger's grants before any request is made; the
//! kind is resolved through discovery (cached per process by the connector).
//! In a dry run, writes are sent as server-side dry runs (`dryRun=All`): the
//! API server validates and answers, and stores nothing.

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::Capabilities;
use super::Capability;
use super::bindings::WitError;
use super::bindings::wasmtrigger::plugin::kube::{Host, PatchType, Target};
use crate::config::grants::KubeVerb;

/// Field manager of server-side apply.
const FIELD_MANAGER: &str = "wasmtrigger";

impl Capabilities {
    /// Checks the grant and builds the API handle for a call.
    async fn kube_api(
        &mut self,
        verb: KubeVerb,
        target: &Target,
        name: Option<&str>,
    ) -> Result<Api<DynamicObject>, WitError> {
        let caps = &*self;
        caps.count(Capability::Kube);
        // Names go into the request path: anything a Kubernetes name cannot
        // hold (`/`, `?`, `%`, `..`) could reach another resource.
        check_target(target, name).map_err(WitError::Invalid)?;
        let ns = target.namespace.as_deref();
        let granted = caps.access.as_ref().is_some_and(|a| {
            a.grants
                .kube
                .iter()
                .any(|g| g.allows(verb, &target.api_version, &target.kind, ns, name))
        });
        if !granted {
            let asked = format!(
                "{} {} {}{}{}",
                verb.name(),
                target.api_version,
                target.kind,
                ns.map(|n| format!(" in {n}")).unwrap_or_default(),
                name.map(|n| format!(" named {n}")).unwrap_or_default()
            );
            return Err(caps.deny(Capability::Kube, &asked, "not granted to this trigger"));
        }
        let Some(connector) = caps.services.kube.clone() else {
            return Err(WitError::Failed(
                "no Kubernetes connection in this context".into(),
            ));
        };
        let client = connector
            .client()
            .await
            .map_err(|e| WitError::Failed(e.0))?;
        let (resource, namespaced) = connector
            .resolve(&target.api_version, &target.kind)
            .await
            .map_err(|e| WitError::Invalid(e.0))?;
        match (namespaced, ns) {
            (true, Some(ns)) => Ok(Api::namespaced_with(client, ns, &resource)),
            (true, None) => Err(WitError::Invalid(format!(
                "{} is namespaced: give a namespace",
                target.kind
            ))),
            (false, None) => Ok(Api::all_with(client, &resource)),
            (false, Some(_)) => Err(WitError::Invalid(format!(
                "{} is cluster-scoped: give no namespace",
                target.kind
            ))),
        }
    }
}

/// Checks what the guest asked for before it goes anywhere near a URL.
fn check_target(target: &Target, name: Option<&str>) -> Result<(), String> {
    use crate::config::grants::{check_namespace, check_object_name};
    let simple = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/'))
            && s.matches('/').count() <= 1
            && !s.contains("..")
            && !s.starts_with('/')
            && !s.ends_with('/')
    };
    if !simple(&target.api_version) {
        return Err(format!(
            "invalid apiVersion `{}`: expected `v1` or `group/version`",
            target.api_version.escape_debug()
        ));
    }
    if !simple(&target.kind) || target.kind.contains(['/', '.']) {
        return Err(format!(
            "invalid kind `{}`: expected a kind like Deployment",
            target.kind.escape_debug()
        ));
    }
    if let Some(ns) = &target.namespace {
        check_namespace(ns)?;
    }
    if let Some(name) = name {
        check_object_name(name)?;
    }
    Ok(())
}

/// A kube error as the guest sees it: 404 not-found, client errors invalid, the rest failed.
fn guest_error(e: kube::Error) -> WitError {
    match e {
        kube::Error::Api(s) if s.code == 404 => WitError::NotFound,
        kube::Error::Api(s) if (400..500).contains(&s.code) => {
            WitError::Invalid(format!("{} {}: {}", s.code, s.reason, s.message))
        }
        kube::Error::Api(s) => WitError::Failed(format!("{} {}: {}", s.code, s.reason, s.message)),
        other => WitError::Failed(other.to_string()),
    }
}

fn to_text(object: &impl serde::Serialize) -> Result<String, WitError> {
    serde_json::to_string(object).map_err(|e| WitError::Failed(e.to_string()))
}

fn parse(text: &str, what: &str) -> Result<Value, WitError> {
    serde_json::from_str(text).map_err(|e| WitError::Invalid(format!("{what} is not JSON: {e}")))
}

/// `apiVersion kind [namespace/]name` for a recorded call.
fn describe_target(target: &Target, name: Option<&str>) -> String {
    let place = match (&target.namespace, name) {
        (Some(ns), Some(n)) => format!(" {ns}/{n}"),
        (None, Some(n)) => format!(" {n}"),
        (Some(ns), None) => format!(" in {ns}"),
        (None, None) => String::new(),
    };
    format!("{} {}{place}", target.api_version, target.kind)
}

/// A recorded object or list answer, as the JSON text the guest gets.
fn replayed_object(answer: serde_json::Value) -> Option<String> {
    Some(match answer {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    })
}

/// Answers are objects as JSON text: recorded as the JSON they hold.
fn text_answer(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

/// A kube call through [`Capabilities::traced`]: objects are JSON text.
macro_rules! kube_call {
    ($caps:expr, $function:literal, $args:expr, $live:expr) => {
        $caps
            .traced(
                ("kube", $function),
                $args,
                replayed_object,
                |t| text_answer(t),
                $live,
            )
            .await
    };
}

impl Host for Capabilities {
    async fn get(&mut self, target: Target, name: String) -> Result<String, WitError> {
        let args = describe_target(&target, Some(&name));
        kube_call!(self, "get", args, async |c: &mut Self| c
            .kube_get(target, name)
            .await)
    }

    async fn list_objects(
        &mut self,
        target: Target,
        label_selector: Option<String>,
    ) -> Result<String, WitError> {
        let args = format!(
            "{}{}",
            describe_target(&target, None),
            label_selector
                .as_ref()
                .map(|l| format!(" with labels {l:?}"))
                .unwrap_or_default()
        );
        kube_call!(self, "list-objects", args, async |c: &mut Self| c
            .kube_list(target, label_selector)
            .await)
    }

    async fn create(&mut self, target: Target, object: String) -> Result<String, WitError> {
        let args = format!("{}: {object}", describe_target(&target, None));
        kube_call!(self, "create", args, async |c: &mut Self| c
            .kube_create(target, object)
            .await)
    }

    async fn apply(
        &mut self,
        target: Target,
        name: String,
        object: String,
    ) -> Result<String, WitError> {
        let args = format!("{}: {object}", describe_target(&target, Some(&name)));
        kube_call!(self, "apply", args, async |c: &mut Self| c
            .kube_apply(target, name, object)
            .await)
    }

    async fn patch(
        &mut self,
        target: Target,
        name: String,
        patch_type: PatchType,
        patch: String,
    ) -> Result<String, WitError> {
        let kind = match patch_type {
            PatchType::Merge => "merge",
            PatchType::Strategic => "strategic",
            PatchType::Json => "json",
        };
        let args = format!(
            "{} ({kind}): {patch}",
            describe_target(&target, Some(&name))
        );
        kube_call!(self, "patch", args, async |c: &mut Self| c
            .kube_patch(target, name, patch_type, patch)
            .await)
    }

    async fn delete(&mut self, target: Target, name: String) -> Result<(), WitError> {
        let args = describe_target(&target, Some(&name));
        self.traced(
            ("kube", "delete"),
            args,
            |_| Some(()),
            |_| serde_json::Value::Null,
            async |c: &mut Self| c.kube_delete(target, name).await,
        )
        .await
    }
}

/// The calls themselves, every grant check included.
impl Capabilities {
    async fn kube_get(&mut self, target: Target, name: String) -> Result<String, WitError> {
        let api = self.kube_api(KubeVerb::Get, &target, Some(&name)).await?;
        to_text(&api.get(&name).await.map_err(guest_error)?)
    }

    async fn kube_list(
        &mut self,
        target: Target,
        label_selector: Option<String>,
    ) -> Result<String, WitError> {
        if let Some(l) = &label_selector {
            crate::config::grants::check_label_selector(l).map_err(WitError::Invalid)?;
        }
        let api = self.kube_api(KubeVerb::List, &target, None).await?;
        let mut params = ListParams::default();
        if let Some(l) = &label_selector {
            params = params.labels(l);
        }
        let list = api.list(&params).await.map_err(guest_error)?;
        to_text(&list.items)
    }

    async fn kube_create(&mut self, target: Target, object: String) -> Result<String, WitError> {
        let value = parse(&object, "the object")?;
        let name = value["metadata"]["name"].as_str().map(str::to_string);
        let api = self
            .kube_api(KubeVerb::Create, &target, name.as_deref())
            .await?;
        let object: DynamicObject = serde_json::from_value(value)
            .map_err(|e| WitError::Invalid(format!("not a Kubernetes object: {e}")))?;
        to_text(
            &api.create(
                &PostParams {
                    dry_run: self.dry_run.is_some(),
                    ..PostParams::default()
                },
                &object,
            )
            .await
            .map_err(guest_error)?,
        )
    }

    async fn kube_apply(
        &mut self,
        target: Target,
        name: String,
        object: String,
    ) -> Result<String, WitError> {
        let value = parse(&object, "the object")?;
        let api = self.kube_api(KubeVerb::Apply, &target, Some(&name)).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.dry_run = self.dry_run.is_some();
        to_text(
            &api.patch(&name, &params, &Patch::Apply(value))
                .await
                .map_err(guest_error)?,
        )
    }

    async fn kube_patch(
        &mut self,
        target: Target,
        name: String,
        patch_type: PatchType,
        patch: String,
    ) -> Result<String, WitError> {
        let value = parse(&patch, "the patch")?;
        let api = self.kube_api(KubeVerb::Patch, &target, Some(&name)).await?;
        let patch = match patch_type {
            PatchType::Merge => Patch::Merge(value),
            PatchType::Strategic => Patch::Strategic(value),
            PatchType::Json => Patch::Json::<Value>(
                serde_json::from_value(value)
                    .map_err(|e| WitError::Invalid(format!("not a JSON patch: {e}")))?,
            ),
        };
        to_text(
            &api.patch(
                &name,
                &PatchParams {
                    dry_run: self.dry_run.is_some(),
                    ..PatchParams::default()
                },
                &patch,
            )
            .await
            .map_err(guest_error)?,
        )
    }

    async fn kube_delete(&mut self, target: Target, name: String) -> Result<(), WitError> {
        let api = self
            .kube_api(KubeVerb::Delete, &target, Some(&name))
            .await?;
        api.delete(
            &name,
            &DeleteParams {
                dry_run: self.dry_run.is_some(),
                ..DeleteParams::default()
            },
        )
        .await
        .map(drop)
        .map_err(guest_error)
    }
}
