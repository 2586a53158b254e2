//! `POST /api/v1/triggers/{name}/redrive`: resubmits recorded events of a
//! trigger through the dispatcher and the journal, as new events (new ids)
//! whose runs name the run they repeat (`redriveOf`). Body, all optional:
//! `{"status": "failed"` (the default; `succeeded`, `filtered`, `any`),
//! `"since": "1h" | RFC 3339, "runIds": [...], "limit": 1000, "dryRun": false}`.
//! A run whose event data was not recorded (over the size bound, recording
//! off) is listed as skipped, with why.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, ServerContext, ServerState, error};
use crate::event::Event;
use crate::runs::RunStatus;
use crate::runs::store::RunQuery;

/// Largest request body.
const MAX_BODY: u64 = 1 << 20;
/// Most runs one redrive takes.
pub const MAX_RUNS: usize = 10_000;

pub(super) async fn handle(
    state: &Arc<ServerState>,
    engine: &ServerContext,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(trigger) = engine.triggers.trigger(name).await else {
        return error(StatusCode::NOT_FOUND, "no trigger with that name");
    };
    let declared = super::declared_length(req.headers());
    let body = match super::read_body(state, req.into_body(), declared, MAX_BODY).await {
        Ok((bytes, _budget)) => bytes,
        Err(response) => return response,
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
        }
    };
    let status = match request["status"].as_str().unwrap_or("failed") {
        "failed" => Some(RunStatus::Failed),
        "succeeded" => Some(RunStatus::Succeeded),
        "filtered" => Some(RunStatus::Filtered),
        "any" => None,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("status `{other}`: expected failed, succeeded, filtered or any"),
            );
        }
    };
    let since = match request["since"].as_str().map(super::api::since).transpose() {
        Ok(since) => since,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let limit = request["limit"]
        .as_u64()
        .unwrap_or(1000)
        .clamp(1, MAX_RUNS as u64) as usize;
    let only: Option<Vec<String>> = request["runIds"].as_array().map(|ids| {
        ids.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    let query = RunQuery {
        before: None,
        trigger: Some(name.to_string()),
        status,
        since,
        event: None,
        limit: Some(if only.is_some() { MAX_RUNS } else { limit }),
    };
    let store = engine.history.clone();
    let runs = match tokio::task::spawn_blocking(move || store.list(&query)).await {
        Ok(Ok(runs)) => runs,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let dry_run = request["dryRun"] == true;
    let (mut redriven, mut skipped) = (Vec::new(), Vec::new());
    // Oldest first, so the events go back in the order they first came.
    for run in runs.into_iter().rev() {
        if only.as_ref().is_some_and(|ids| !ids.contains(&run.run_id)) {
            continue;
        }
        let data = run
            .recording
            .as_ref()
            .and_then(|r| r.event.as_ref())
            .and_then(|e| e.data.as_deref())
            .and_then(|d| serde_json::from_str::<Value>(d).ok());
        let Some(data) = data else {
            skipped.push(json!({
                "runId": run.run_id,
                "reason": "its event data was not recorded (recording off, or over engine.history.maxEventSize)",
            }));
            continue;
        };
        let mut event = Event::new(name, &run.source, &run.kind, &data);
        event.redrive_of = Some(run.run_id.clone());
        if dry_run {
            redriven.push(json!({ "runId": run.run_id, "eventId": Value::Null }));
            continue;
        }
        let event_id = event.id.clone();
        match engine.triggers.submitter().submit(&trigger, event).await {
            Ok(()) => redriven.push(json!({ "runId": run.run_id, "eventId": event_id })),
            Err(e) => skipped.push(json!({ "runId": run.run_id, "reason": e.to_string() })),
        }
    }
    super::json(
        StatusCode::OK,
        &json!({ "dryRun": dry_run, "redriven": redriven, "skipped": skipped }),
    )
}
