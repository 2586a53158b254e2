//! The JSON API used by `wasmtrigger runs`, `runs show`, `triggers` and `fire`:
//!
//! - `GET /api/v1/runs?trigger=&status=&since=&event=&before=&limit=` —
//!   newest start first; `since` is RFC 3339 or a duration back from now
//!   (`15m`); `before` a run id, for the next page (runs that started before
//!   it); `limit` is 1 to 10000 (default 100); a `trigger` neither running
//!   nor in the history is 404;
//! - `GET /api/v1/runs/stream[?trigger=]` — finished runs as server-sent
//!   events ([`super::stream`]);
//! - `GET /api/v1/runs/{run_id}`;
//! - `POST /api/v1/runs/{run_id}/replay` ([`super::replay`]);
//! - `GET /api/v1/triggers` — state, last success/failure, counts, what
//!   each trigger starts on success and on failure, its module versions, runs
//!   per minute over the last hour (`perMinute`, oldest first), its shadow's
//!   counts; and `problems`: what the config files' last change or a Trigger
//!   object could not apply (a trigger that is only there is `invalid`);
//! - `POST /api/v1/triggers/{name}/fire` with optional `{"data": ...}`;
//! - `POST /api/v1/triggers/{name}/redrive` ([`super::redrive`]);
//! - `GET /api/v1/triggers/{name}/shadow` — the shadow candidate's counts and
//!   latest comparisons ([`crate::dispatch::shadow`]).
//!
//! `fire` never skips a trigger's own authentication: a webhook trigger with
//! `auth` other than `none` cannot be fired here (403); its events come only
//! through `POST /hooks/{name}` with its credentials.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::{Body, ServerState, error, json, same_secret};
use crate::config::{SourceConfig, WebhookAuth};
use crate::dispatch::SubmitError;
use crate::event::Event;
use crate::runs::RunStatus;
use crate::runs::store::RunQuery;

/// Most runs one `runs` answer holds.
pub const MAX_LIMIT: usize = 10_000;

/// Largest `fire` body accepted.
const MAX_FIRE_BODY: u64 = 1 << 20;

pub(super) async fn handle(state: &Arc<ServerState>, req: Request<Incoming>) -> Response<Body> {
    if let Some(source) = &state.api_token {
        let Some(token) = source.current() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API token is unavailable",
            );
        };
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "the API needs the bearer token");
        }
    }
    let Some(engine) = state.engine.get() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "engine is starting");
    };
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["api", "v1", "runs"]) => {
            let query = match run_query(req.uri().query().unwrap_or("")) {
                Ok(q) => q,
                Err(message) => return error(StatusCode::BAD_REQUEST, &message),
            };
            // A name that is neither running nor in the history is a typo, not "no runs".
            if let Some(name) = &query.trigger
                && engine.triggers.trigger(name).await.is_none()
            {
                let store = engine.history.clone();
                let known = tokio::task::spawn_blocking(move || store.summaries()).await;
                let name = name.clone();
                if !matches!(known, Ok(Ok(s)) if s.contains_key(&name)) {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("no trigger named `{name}`, running or in the history"),
                    );
                }
            }
            let store = engine.history.clone();
            match tokio::task::spawn_blocking(move || store.list(&query)).await {
                Ok(Ok(runs)) => json(StatusCode::OK, &serde_json::json!({ "runs": runs })),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (Method::GET, ["api", "v1", "runs", "stream"]) => {
            let trigger = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "trigger")
                .map(|(_, v)| v.into_owned());
            let reconnect = req.headers().contains_key("last-event-id");
            let heartbeat = (state.limits.idle_timeout / 3).clamp(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(15),
            );
            super::stream::respond(engine.runs.subscribe(), trigger, reconnect, heartbeat)
        }
        (Method::GET, ["api", "v1", "runs", id]) => {
            let (store, id) = (engine.history.clone(), id.to_string());
            match tokio::task::spawn_blocking(move || store.get(&id)).await {
                Ok(Ok(Some(run))) => json(
                    StatusCode::OK,
                    &serde_json::to_value(run).unwrap_or_default(),
                ),
                Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no run with that id"),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (Method::POST, ["api", "v1", "runs", id, "replay"]) => {
            let id = id.to_string();
            super::replay::handle(state, engine, &id, req).await
        }
        (Method::GET, ["api", "v1", "triggers", name, "shadow"]) => {
            let Some(trigger) = engine.triggers.trigger(name).await else {
                return error(StatusCode::NOT_FOUND, "no trigger with that name");
            };
            let Some(shadow) = trigger.config().shadow.clone() else {
                return error(StatusCode::NOT_FOUND, "this trigger has no shadow");
            };
            let view = engine.shadows.view(name).unwrap_or_default();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "trigger": name,
                    "candidate": shadow.module.name,
                    "sample": shadow.sample,
                    "matched": view.matched,
                    "differed": view.differed,
                    "errors": view.errors,
                    "latest": view.latest,
                }),
            )
        }
        (Method::POST, ["api", "v1", "triggers", name, "redrive"]) => {
            let name = name.to_string();
            super::redrive::handle(state, engine, &name, req).await
        }
        (Method::GET, ["api", "v1", "triggers"]) => triggers(state, engine).await,
        (Method::POST, ["api", "v1", "triggers", name, "fire"]) => {
            let name = name.to_string();
            let Some(trigger) = engine.triggers.trigger(&name).await else {
                return error(StatusCode::NOT_FOUND, "no trigger with that name");
            };
            if let SourceConfig::Webhook(hook) = &trigger.config().source
                && hook.auth != WebhookAuth::None
            {
                return error(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "`{name}` is a webhook trigger with its own authentication; send its events to POST /hooks/{name} with its credentials (fire cannot skip them)"
                    ),
                );
            }
            let declared = super::declared_length(req.headers());
            let body = match super::read_body(state, req.into_body(), declared, MAX_FIRE_BODY).await
            {
                Ok((bytes, _budget)) => bytes,
                Err(response) => return response,
            };
            let data = if body.is_empty() {
                serde_json::json!({})
            } else {
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => v
                        .get("data")
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({})),
                    Err(e) => {
                        return error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}"));
                    }
                }
            };
            let event = Event::new(&name, "manual", "fire", &data);
            let event_id = event.id.clone();
            match engine.triggers.submitter().submit(&trigger, event).await {
                Ok(()) => json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({ "eventId": event_id }),
                ),
                Err(SubmitError::QueueFull) => {
                    error(StatusCode::TOO_MANY_REQUESTS, "queue full; retry later")
                }
                Err(SubmitError::Stopping) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, "engine is stopping")
                }
                Err(SubmitError::Journal) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "event could not be stored; retry later",
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// The triggers with what the web page shows of each, and the problems.
async fn triggers(state: &ServerState, engine: &super::ServerContext) -> Response<Body> {
    let views = match engine.triggers.views(&engine.history).await {
        Ok(views) => views,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let problems = engine.triggers.problems();
    let mut list = Vec::new();
    for view in &views {
        let mut value = serde_json::to_value(view).unwrap_or_default();
        if let Some(trigger) = engine.triggers.trigger(&view.name).await {
            let config = trigger.config();
            let mut modules = Vec::new();
            if let Some(crate::config::FilterConfig::Module(m)) = &config.filter {
                modules.push(m.name.clone());
            }
            modules.push(config.action.module.name.clone());
            let labels: Vec<String> = modules
                .iter()
                .map(|name| {
                    engine
                        .triggers
                        .registry()
                        .get(name)
                        .map(|m| m.label())
                        .unwrap_or_else(|_| name.clone())
                })
                .collect();
            value["modules"] = labels.into();
            if config.shadow.is_some() {
                let shadow = engine.shadows.view(&view.name).unwrap_or_default();
                value["shadow"] = serde_json::json!({
                    "matched": shadow.matched,
                    "differed": shadow.differed,
                    "errors": shadow.errors,
                });
            }
        }
        if let Some(activity) = state.activity.get() {
            value["perMinute"] = activity.now(&view.name).into();
        }
        let own: Vec<&str> = problems
            .iter()
            .filter(|p| p.trigger.as_deref() == Some(view.name.as_str()))
            .map(|p| p.message.as_str())
            .collect();
        if !own.is_empty() {
            value["problems"] = own.into();
        }
        list.push(value);
    }
    // A trigger only a rejected change or an invalid object names is invalid.
    for problem in &problems {
        let Some(name) = &problem.trigger else {
            continue;
        };
        if views.iter().any(|v| &v.name == name) || list.iter().any(|v| v["name"] == name.as_str())
        {
            continue;
        }
        let messages: Vec<&str> = problems
            .iter()
            .filter(|p| p.trigger.as_ref() == Some(name))
            .map(|p| p.message.as_str())
            .collect();
        list.push(serde_json::json!({
            "name": name,
            "source": "-",
            "state": "invalid",
            "problems": messages,
        }));
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "triggers": list, "problems": problems }),
    )
}

/// Parses `trigger`, `status`, `since`, `event`, `before` and `limit` from a query string.
fn run_query(query: &str) -> Result<RunQuery, String> {
    let mut q = RunQuery::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "trigger" => q.trigger = Some(value.into_owned()),
            "status" => {
                q.status = Some(match value.as_ref() {
                    "filtered" => RunStatus::Filtered,
                    "succeeded" => RunStatus::Succeeded,
                    "failed" => RunStatus::Failed,
                    other => {
                        return Err(format!(
                            "unknown status `{other}`: expected filtered, succeeded or failed"
                        ));
                    }
                })
            }
            "since" => q.since = Some(since(&value)?),
            "event" => q.event = Some(value.into_owned()),
            "before" => q.before = Some(value.into_owned()),
            "limit" => {
                q.limit = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("limit `{value}`: expected a number from 1 to {MAX_LIMIT}")
                        })?,
                );
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    Ok(q)
}

/// RFC 3339 as is, or a duration meaning "that long ago".
pub fn since(text: &str) -> Result<String, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    let ago = crate::config::values::parse_duration(text)
        .map_err(|_| format!("since `{text}`: expected an RFC 3339 time or a duration like 15m"))?;
    let t = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
    Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_errors_say_what_was_expected() {
        let q = run_query("trigger=a&status=failed&limit=5&since=2026-11-22T10:00:00Z").unwrap();
        assert_eq!(q.trigger.as_deref(), Some("a"));
        assert_eq!(q.status, Some(RunStatus::Failed));
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.since.as_deref(), Some("2026-11-22T10:00:00.000Z"));
        assert!(
            run_query("status=odd")
                .unwrap_err()
                .contains("expected filtered, succeeded or failed")
        );
        assert!(run_query("since=15m").unwrap().since.is_some());
        assert!(run_query("since=yesterday").is_err());
        assert!(run_query("colour=red").is_err());
        for bad in ["limit=0", "limit=10001", "limit=-1", "limit=many"] {
            let e = run_query(bad).unwrap_err();
            assert!(
                e.contains("expected a number from 1 to 10000"),
                "{bad}: {e}"
            );
        }
        assert_eq!(run_query("event=e1").unwrap().event.as_deref(), Some("e1"));
    }
}
