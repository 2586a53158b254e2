//! Objects, the resourceVersion counter and the change history watches read.
//!
//! Every write that changes an object bumps one global counter and records
//! the change; a write that changes nothing (same content) records nothing,
//! as the real apiserver does.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use crate::discovery::ResourceType;
use crate::{crd, patch};

/// Index of a resource type in the server's type list.
pub type TypeId = usize;

/// (type, namespace or "", name).
pub type Key = (TypeId, String, String);

/// Longest history kept before the oldest changes are compacted away.
const MAX_HISTORY: usize = 10_000;

/// One recorded change.
#[derive(Clone, Debug)]
pub struct Change {
    /// resourceVersion after the change.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// Which type.
    pub ty: TypeId,
    /// The object after the change (before, for a delete, with the new rv).
    pub object: Value,
}

/// An API error, rendered as a `Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, `BadRequest`, ...
    pub reason: &'static str,
    /// Human text.
    pub message: String,
}

impl ApiError {
    /// An error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// All of it: the test set-up helpers, which write as a controller would.
    Whole,
    /// A write to the object itself: `status` is kept as it is, for kinds
    /// whose status is a subresource (and dropped on create).
    Main,
    /// A write to `/status`: only `status` changes.
    Status,
}

/// All state.
pub struct Store {
    /// Known types.
    pub types: Vec<ResourceType>,
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Changes at or below this version are gone from the history.
    compacted: u64,
    /// Every change is also sent here, under the store lock, so a watch
    /// that subscribes and reads the history in one critical section sees
    /// each change exactly once.
    changes: tokio::sync::broadcast::Sender<Change>,
    /// A dry run is in progress: nothing is recorded or sent.
    dry: bool,
    /// CRDs are being turned into kinds (their own writes do not start another pass).
    syncing: bool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The object without the fields the server owns, for no-op detection.
fn content(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
        meta.remove("generation");
    }
    o
}

impl Store {
    /// A store with the built-in types and the `default` and `kube-system` namespaces.
    pub fn new(types: Vec<ResourceType>, changes: tokio::sync::broadcast::Sender<Change>) -> Self {
        let mut store = Store {
            types,
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            changes,
            dry: false,
            syncing: false,
        };
        let ns = store.type_of("", "namespaces").expect("namespaces type");
        for name in ["default", "kube-system"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let _ = store.create(ns, "", body);
        }
        store
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest version a watch or continue token may still start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Type by group and plural.
    pub fn type_of(&self, group: &str, plural: &str) -> Option<TypeId> {
        self.types
            .iter()
            .position(|t| t.group == group && t.plural == plural)
    }

    /// Forgets every change so far: watches from older versions get 410.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// Changes after `rv` (None if some are compacted away).
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Change>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    /// Objects of a type, in one namespace or all (`None`), in key order.
    pub fn list(&self, ty: TypeId, ns: Option<&str>) -> Vec<(Key, Value)> {
        self.objects
            .range((ty, String::new(), String::new())..(ty + 1, String::new(), String::new()))
            .filter(|((_, n, _), _)| ns.is_none_or(|want| n == want))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One object.
    pub fn get(&self, ty: TypeId, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(ty, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| self.not_found(ty, name))
    }

    fn not_found(&self, ty: TypeId, name: &str) -> ApiError {
        let t = &self.types[ty];
        let what = t.qualified();
        ApiError::new(404, "NotFound", format!("{what} \"{name}\" not found"))
    }

    /// A receiver of changes after now, with the history after `rv` (None if compacted).
    pub fn subscribe(
        &self,
        rv: u64,
    ) -> (
        tokio::sync::broadcast::Receiver<Change>,
        Option<Vec<Change>>,
    ) {
        (self.changes.subscribe(), self.changes_since(rv))
    }

    fn record(&mut self, kind: &'static str, ty: TypeId, object: Value) {
        if self.dry {
            return;
        }
        let crd_changed = self.types[ty].group == "apiextensions.k8s.io";
        let change = Change {
            rv: self.rv,
            kind,
            ty,
            object,
        };
        let _ = self.changes.send(change.clone());
        self.history.push_back(change);
        while self.history.len() > MAX_HISTORY {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
        if crd_changed && !self.syncing {
            self.syncing = true;
            self.sync_crds();
            self.syncing = false;
        }
    }

    /// Serves the kinds the stored CRDs define, and only those: new kinds
    /// are added, a deleted CRD's kinds stop being served and lose their
    /// objects, and a new CRD's status says its names are accepted.
    fn sync_crds(&mut self) {
        let Some(crd_type) = self.type_of("apiextensions.k8s.io", "customresourcedefinitions")
        else {
            return;
        };
        let crds: Vec<Value> = self
            .list(crd_type, None)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let mut wanted: Vec<ResourceType> = Vec::new();
        for kind in crds.iter().flat_map(crd::kinds_of) {
            // Names another CRD (or a built-in kind) holds are not accepted.
            let taken = wanted
                .iter()
                .chain(self.types.iter().filter(|t| t.crd.is_none()))
                .any(|t| {
                    t.group == kind.group && t.version == kind.version && t.plural == kind.plural
                });
            if !taken {
                wanted.push(kind);
            }
        }
        for ty in 0..self.types.len() {
            let t = &self.types[ty];
            if t.crd.is_none() || !t.served {
                continue;
            }
            let kept = wanted
                .iter()
                .any(|w| w.group == t.group && w.version == t.version && w.plural == t.plural);
            if !kept {
                let names: Vec<(String, String)> = self
                    .list(ty, None)
                    .into_iter()
                    .map(|((_, ns, name), _)| (ns, name))
                    .collect();
                for (ns, name) in names {
                    let _ = self.delete(ty, &ns, &name);
                }
                self.types[ty].served = false;
            }
        }
        for kind in wanted {
            match self.types.iter().position(|t| {
                t.group == kind.group && t.version == kind.version && t.plural == kind.plural
            }) {
                Some(ty) => self.types[ty] = kind,
                None => self.types.push(kind),
            }
        }
        for crd in crds.iter().filter(|c| !crd::is_established(c)) {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            let mut established = crd.clone();
            established["status"] = crd::accepted_status(crd, &now());
            let _ = self.update_as(crd_type, "", name, established, Part::Whole);
        }
    }

    /// Runs `write` as a dry run (`dryRun=All`): it is validated and
    /// answered as if done, but nothing is stored and no watch hears of it.
    pub fn dry_run<T>(&mut self, write: impl FnOnce(&mut Store) -> T) -> T {
        let (objects, rv) = (self.objects.clone(), self.rv);
        self.dry = true;
        let out = write(self);
        self.dry = false;
        self.objects = objects;
        self.rv = rv;
        out
    }

    fn check_body(&self, ty: TypeId, body: &Value) -> Result<(), ApiError> {
        let t = &self.types[ty];
        if !body.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body must be an object",
            ));
        }
        for (field, want) in [("kind", t.kind.clone()), ("apiVersion", t.api_version())] {
            if let Some(got) = body[field].as_str()
                && got != want
            {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("the {field} of the object ({got}) does not match the URL ({want})"),
                ));
            }
        }
        Ok(())
    }

    /// Creates an object; the namespace comes from the URL.
    pub fn create(&mut self, ty: TypeId, ns: &str, body: Value) -> Result<Value, ApiError> {
        self.create_as(ty, ns, body, Part::Whole)
    }

    /// Creates an object as a write to `part` (a `Main` create drops a subresource status).
    pub fn create_as(
        &mut self,
        ty: TypeId,
        ns: &str,
        mut body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.check_body(ty, &body)?;
        let t = self.types[ty].clone();
        if part == Part::Main
            && t.status
            && let Some(o) = body.as_object_mut()
        {
            o.remove("status");
        }
        let mut name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match body["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].into();
                    name = format!("{prefix}{suffix}");
                }
                _ => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "{} is invalid: metadata.name: Required value: name or generateName is required",
                            t.kind
                        ),
                    ));
                }
            }
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            || name.len() > 253
        {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                    t.kind
                ),
            ));
        }
        if t.namespaced {
            let in_body = body["metadata"]["namespace"].as_str().unwrap_or(ns);
            if in_body != ns {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            let nstype = self.type_of("", "namespaces").expect("namespaces type");
            if self.get(nstype, "", ns).is_err() {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                ));
            }
        }
        let key = (
            ty,
            if t.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            let what = t.qualified();
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{what} \"{name}\" already exists"),
            ));
        }
        self.rv += 1;
        body["apiVersion"] = t.api_version().into();
        body["kind"] = t.kind.clone().into();
        let meta = body["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::new(400, "BadRequest", "metadata must be an object"))?;
        meta.insert("name".into(), name.into());
        if t.namespaced {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("resourceVersion".into(), self.rv.to_string().into());
        meta.insert("generation".into(), 1.into());
        meta.remove("generateName");
        self.objects.insert(key, body.clone());
        self.record("ADDED", ty, body.clone());
        Ok(body)
    }

    /// Replaces an object. A stale `metadata.resourceVersion` is a 409 Conflict;
    /// a body equal to what is stored changes nothing and emits no event.
    /// Only `part` of it changes (see [`Part`]).
    pub fn update_as(
        &mut self,
        ty: TypeId,
        ns: &str,
        name: &str,
        mut body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.check_body(ty, &body)?;
        let current = self.get(ty, ns, name)?;
        let t = self.types[ty].clone();
        let set_status =
            |object: &mut Value, from: &Value| match (object.as_object_mut(), from.get("status")) {
                (Some(o), Some(status)) => {
                    o.insert("status".into(), status.clone());
                }
                (Some(o), None) => {
                    o.remove("status");
                }
                _ => {}
            };
        match part {
            Part::Main if t.status => set_status(&mut body, &current),
            Part::Status => {
                let mut next = current.clone();
                set_status(&mut next, &body);
                next["metadata"]["resourceVersion"] =
                    match body["metadata"]["resourceVersion"].as_str() {
                        Some(rv) => rv.into(),
                        None => current["metadata"]["resourceVersion"].clone(),
                    };
                body = next;
            }
            _ => {}
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && rv
                != current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            let what = t.qualified();
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            ));
        }
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the name of the object does not match the name in the URL",
            ));
        }
        body["apiVersion"] = t.api_version().into();
        body["kind"] = t.kind.clone().into();
        // Server-owned metadata is kept from the stored object.
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
        ] {
            let v = current["metadata"][field].clone();
            if !v.is_null() {
                body["metadata"][field] = v;
            }
        }
        if body["metadata"].get("managedFields").is_none()
            && let Some(m) = current["metadata"].get("managedFields")
        {
            body["metadata"]["managedFields"] = m.clone();
        }
        if content(&body) == content(&current) {
            return Ok(current);
        }
        if body.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            body["metadata"]["generation"] = generation.into();
        }
        self.rv += 1;
        body["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.objects
            .insert((ty, ns.to_string(), name.to_string()), body.clone());
        self.record("MODIFIED", ty, body.clone());
        Ok(body)
    }

    /// Patches `part` of an object with one of the patch content types: the patch applies to the whole object,
    /// then only what `part` may change is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn patch_as(
        &mut self,
        ty: TypeId,
        ns: &str,
        name: &str,
        content_type: &str,
        patch_body: &[u8],
        field_manager: Option<&str>,
        part: Part,
    ) -> Result<Value, ApiError> {
        let bad = |e: String| ApiError::new(400, "BadRequest", e);
        let kind = content_type.split(';').next().unwrap_or_default().trim();
        if kind == "application/apply-patch+yaml" {
            let manager = field_manager.filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
            })?;
            let applied: Value = serde_yaml_ng::from_slice(patch_body)
                .map_err(|e| bad(format!("invalid apply patch: {e}")))?;
            return self.apply(ty, ns, name, applied, manager, part);
        }
        let patch: Value =
            serde_json::from_slice(patch_body).map_err(|e| bad(format!("invalid patch: {e}")))?;
        let mut object = self.get(ty, ns, name)?;
        match kind {
            "application/merge-patch+json" => patch::merge(&mut object, &patch),
            "application/strategic-merge-patch+json" => patch::strategic(&mut object, &patch),
            "application/json-patch+json" => {
                patch::json_patch(&mut object, &patch).map_err(|e| {
                    ApiError::new(422, "Invalid", format!("the JSON patch failed: {e}"))
                })?
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {other}"),
                ));
            }
        }
        // A patch is never a stale write unless it says so itself.
        let sent_rv = patch.pointer("/metadata/resourceVersion").is_some();
        if !sent_rv && let Some(m) = object["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        self.update_as(ty, ns, name, object, part)
    }

    /// Server-side apply, simplified: the applied configuration is merged
    /// into the object (created if absent) and the manager is recorded in
    /// `managedFields`. Field ownership conflicts are not detected.
    fn apply(
        &mut self,
        ty: TypeId,
        ns: &str,
        name: &str,
        applied: Value,
        manager: &str,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.check_body(ty, &applied)?;
        let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": self.types[ty].api_version(), "time": now(), "fieldsType": "FieldsV1"});
        match self.get(ty, ns, name) {
            Err(e) if e.code == 404 => {
                let mut body = applied;
                body["metadata"]["name"] = name.into();
                body["metadata"]["managedFields"] = json!([entry]);
                self.create_as(ty, ns, body, part)
            }
            Err(e) => Err(e),
            Ok(mut object) => {
                let mut applied = applied;
                if let Some(m) = applied["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                patch::merge(&mut object, &applied);
                let mut managers: Vec<Value> = object["metadata"]["managedFields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m["manager"] != manager)
                    .collect();
                managers.push(entry);
                let before = self.get(ty, ns, name)?;
                let mut candidate = object.clone();
                candidate["metadata"]["managedFields"] =
                    before["metadata"]["managedFields"].clone();
                if content(&candidate) == content(&before)
                    && before["metadata"]["managedFields"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|e| e["manager"] == manager))
                {
                    return Ok(before);
                }
                object["metadata"]["managedFields"] = managers.into();
                if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                self.update_as(ty, ns, name, object, part)
            }
        }
    }

    /// Deletes an object; returns it as it was.
    pub fn delete(&mut self, ty: TypeId, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (ty, ns.to_string(), name.to_string());
        let mut object = self
            .objects
            .remove(&key)
            .ok_or_else(|| self.not_found(ty, name))?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.record("DELETED", ty, object.clone());
        Ok(object)
    }
}
