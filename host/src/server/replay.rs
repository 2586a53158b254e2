//! `POST /api/v1/runs/{id}/replay`: replays a stored run inside the running
//! engine ([`crate::replay`]), against the module versions kept for it or
//! against versions uploaded with the request:
//! `{"module"|"filter"|"action": {"name": "x.wasm", "wasm": BASE64}, "live": true}` (the
//! body at most [`MAX_BODY`] bytes). Answers the report; 422 when the run
//! cannot be replayed (not recorded, module not kept or not a module).

use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{Body, ServerContext, ServerState, error, json};
use crate::capabilities::HostServices;
use crate::runs::modules::ModuleStore;
use crate::runtime::{LoadedModule, Runtime};

/// Largest replay request: base64 of about 18 MiB of modules. A body of
/// unknown length reserves this much of the server's in-flight budget.
pub const MAX_BODY: u64 = 24 << 20;

/// What a replay needs from the engine.
#[derive(Clone)]
pub struct ReplayContext {
    /// Compiles the modules.
    pub runtime: Arc<Runtime>,
    /// Capability services (no call reaches them: every call is answered from the recording).
    pub services: Arc<HostServices>,
    /// The module versions recorded runs used.
    pub modules: Option<ModuleStore>,
}

pub(super) async fn handle(
    state: &Arc<ServerState>,
    engine: &ServerContext,
    id: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(context) = engine.replay.clone() else {
        return error(StatusCode::NOT_FOUND, "this engine does not record runs");
    };
    let declared = super::declared_length(req.headers());
    let body = match super::read_body(state, req.into_body(), declared, MAX_BODY).await {
        Ok((bytes, _budget)) => bytes,
        Err(response) => return response,
    };
    let request: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
        }
    };
    let (store, run_id) = (engine.history.clone(), id.to_string());
    let record = match tokio::task::spawn_blocking(move || store.get(&run_id)).await {
        Ok(Ok(Some(run))) => run,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, "no run with that id"),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut uploads = [request.get("filter"), request.get("action")];
    if let Some(module) = request.get("module") {
        let name = module["name"].as_str().unwrap_or_default();
        let part = usize::from(!crate::replay::is_filter_named(&record, name));
        uploads[part] = Some(module);
    }
    let labels = [
        record.filter.clone().filter(|f| f != "cel"),
        record.module.clone(),
    ];
    let mut loaded: [Option<LoadedModule>; 2] = [None, None];
    for i in 0..2 {
        match load(&context, labels[i].as_deref(), uploads[i]).await {
            Ok(module) => loaded[i] = module,
            Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        }
    }
    // Live: calls the recording cannot answer go out under the trigger's grants as they are now.
    let live = if request["live"] == true {
        let Some(trigger) = engine.triggers.trigger(&record.trigger).await else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "trigger `{}` is not running: a live replay needs its grants",
                    record.trigger
                ),
            );
        };
        let action = &trigger.config().action;
        Some(Arc::new(crate::capabilities::ActionAccess {
            grants: action.grants.clone(),
            http: action.http,
        }))
    } else {
        None
    };
    let report = crate::replay::replay(
        &context.runtime,
        context.services.clone(),
        &record,
        (loaded[0].as_ref(), loaded[1].as_ref()),
        live,
    )
    .await;
    match report {
        Ok(report) => json(
            StatusCode::OK,
            &serde_json::to_value(report).unwrap_or_default(),
        ),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

/// The uploaded module, else the kept version of `label`, compiled off the executor.
async fn load(
    context: &ReplayContext,
    label: Option<&str>,
    upload: Option<&serde_json::Value>,
) -> Result<Option<LoadedModule>, String> {
    let (name, bytes) = match (upload, label) {
        (Some(upload), _) => {
            let name = upload["name"]
                .as_str()
                .unwrap_or("uploaded.wasm")
                .to_string();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(upload["wasm"].as_str().unwrap_or_default())
                .map_err(|e| format!("module `{name}` is not base64: {e}"))?;
            (name, bytes)
        }
        (None, Some(label)) => {
            let path = context
                .modules
                .as_ref()
                .and_then(|m| m.find(label))
                .ok_or_else(|| format!("module {label} is not kept: upload it"))?;
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let name = label.rsplit_once('@').map_or(label, |(n, _)| n).to_string();
            (name, bytes)
        }
        (None, None) => return Ok(None),
    };
    let runtime = context.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.compile(&name, None, &bytes))
        .await
        .map_err(|e| e.to_string())?
        .map(Some)
        .map_err(|e| e.to_string())
}
