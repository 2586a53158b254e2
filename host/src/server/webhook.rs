//! `POST /hooks/{trigger}`: a webhook request becomes an event.
//!
//! The body (JSON as is, anything else as base64 with its content type) and
//! the trigger's selected headers become the event's data. A missing or bad
//! credential is 401 and no event; a body over the cap is 413; a full queue is
//! 429 with `Retry-After`; 202 means the event was accepted.
//!
//! Nothing is read from an unauthenticated caller that it need not: unknown
//! triggers are 404 before the body, a bearer token is checked before the
//! body, and an HMAC signature (which needs the body) is checked on a body
//! read under the server's in-flight byte budget and body timeout.

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::Sha256;

use super::{Body, ServerState, cloudevents, error, json, same_secret};
use crate::config::{SourceConfig, WebhookAuth, WebhookConfig};
use crate::dispatch::SubmitError;
use crate::event::Event;

/// How long a caller should wait before retrying a 429.
const RETRY_AFTER_SECONDS: &str = "1";

pub(super) async fn handle(state: &Arc<ServerState>, req: Request<Incoming>) -> Response<Body> {
    let name = req.uri().path().trim_start_matches("/hooks/").to_string();
    let Some(engine) = state.engine.get() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "engine is starting");
    };
    let trigger = engine.triggers.trigger(&name).await;
    let config = trigger.as_ref().map(|t| t.config());
    let Some((trigger, hook)) = trigger.zip(config.and_then(|c| match &c.source {
        SourceConfig::Webhook(w) => Some(w.clone()),
        _ => None,
    })) else {
        // Unknown names get no metrics series (callers could invent any number).
        return error(StatusCode::NOT_FOUND, "no webhook trigger with that name");
    };
    let respond = |response: Response<Body>| {
        state
            .metrics
            .webhook_response(&name, response.status().as_u16());
        response
    };
    if req.method() != Method::POST {
        return respond(error(StatusCode::METHOD_NOT_ALLOWED, "webhooks take POST"));
    }
    let (parts, body) = req.into_parts();
    let refused = |status: StatusCode| {
        tracing::warn!(trigger = %name, status = status.as_u16(), "webhook request refused");
        error(
            status,
            if status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else {
                "cannot verify the request"
            },
        )
    };
    // A bearer token needs no body: check it before reading one.
    if matches!(hook.auth, WebhookAuth::Bearer { .. })
        && let Err(status) = authorize(engine, &hook.auth, &parts.headers, &[]).await
    {
        return respond(refused(status));
    }
    let declared = super::declared_length(&parts.headers);
    let (body, _budget) = match super::read_body(state, body, declared, hook.max_body_bytes).await {
        Ok(read) => read,
        Err(response) => return respond(response),
    };
    if !matches!(hook.auth, WebhookAuth::Bearer { .. })
        && let Err(status) = authorize(engine, &hook.auth, &parts.headers, &body).await
    {
        return respond(refused(status));
    }
    if cloudevents::is_cloudevent(&parts.headers) {
        return respond(cloud_events(engine, &trigger, &name, &hook, &parts.headers, &body).await);
    }
    let data = event_data(&hook, &parts.headers, &body);
    let event = Event::new(&name, "webhook", "post", &data);
    let event_id = event.id.clone();
    match engine.triggers.submitter().submit(&trigger, event).await {
        Ok(()) => respond(json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "eventId": event_id }),
        )),
        Err(e) => respond(refusal(e)),
    }
}

/// The answer to an event the queue did not take.
fn refusal(e: SubmitError) -> Response<Body> {
    match e {
        SubmitError::QueueFull => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "queue full; retry later");
            if let Ok(value) = RETRY_AFTER_SECONDS.parse() {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, value);
            }
            response
        }
        SubmitError::Stopping => error(StatusCode::SERVICE_UNAVAILABLE, "engine is stopping"),
        SubmitError::Journal => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "event could not be stored; retry later",
        ),
    }
}

/// A CloudEvents request (any content mode): one event per CloudEvent. A
/// malformed one is a 400 and no event. A batch the queue cannot take whole
/// is refused whole (429); if it fills up part way, the answer lists the
/// events accepted and where the refusal began, so the caller resends the rest.
async fn cloud_events(
    engine: &super::ServerContext,
    trigger: &Arc<crate::trigger::Trigger>,
    name: &str,
    hook: &WebhookConfig,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Response<Body> {
    let events = match cloudevents::read(headers, body) {
        Ok(events) => events,
        Err(why) => {
            tracing::warn!(trigger = %name, reason = %why, "malformed CloudEvent refused");
            return error(StatusCode::BAD_REQUEST, &why);
        }
    };
    let submitter = engine.triggers.submitter();
    if submitter.queue_depth() + events.len() > submitter.queue_capacity() {
        return refusal(SubmitError::QueueFull);
    }
    let mut accepted = Vec::with_capacity(events.len());
    for (i, ce) in events.into_iter().enumerate() {
        let kind = ce.kind().to_string();
        let time = ce.time();
        let data = ce.into_event_data(request_data(hook, headers));
        let mut event = Event::new(name, "webhook", &kind, &data);
        if let Some(time) = time {
            event.time = time;
        }
        let id = event.id.clone();
        match submitter.submit(trigger, event).await {
            Ok(()) => accepted.push(id),
            Err(e) if accepted.is_empty() => return refusal(e),
            Err(e) => {
                let mut response = refusal(e);
                let status = response.status();
                let body = serde_json::json!({
                    "error": "only part of the batch was accepted",
                    "eventIds": accepted,
                    "refusedFrom": i,
                });
                *response.body_mut() = json(status, &body).into_body();
                return response;
            }
        }
    }
    if accepted.len() == 1 {
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "eventId": accepted[0] }),
        )
    } else {
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "eventIds": accepted }),
        )
    }
}

/// Checks the credential; Err is the status to answer.
async fn authorize(
    engine: &super::ServerContext,
    auth: &WebhookAuth,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Result<(), StatusCode> {
    let secret = |name: String| async move {
        match engine.secrets.get(&name).await {
            Ok(Some(value)) if !value.trim().is_empty() => Ok(value),
            Ok(Some(_)) => {
                tracing::error!(secret = %name, "webhook secret is empty: refusing every request");
                Err(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Ok(None) => {
                tracing::error!(secret = %name, "webhook secret not found in any secret provider");
                Err(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Err(e) => {
                tracing::error!(secret = %name, error = %e, "webhook secret cannot be read");
                Err(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    };
    match auth {
        WebhookAuth::None => Ok(()),
        WebhookAuth::Bearer { secret: name } => {
            let token = secret(name.clone()).await?;
            let token = token.trim();
            let given = headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(StatusCode::UNAUTHORIZED)?;
            same_secret(given.as_bytes(), token.as_bytes())
                .then_some(())
                .ok_or(StatusCode::UNAUTHORIZED)
        }
        WebhookAuth::Hmac {
            secret: name,
            header,
            prefix,
        } => {
            // Surrounding whitespace (a Secret file's final newline) is not part of the key.
            let key = secret(name.clone()).await?;
            let key = key.trim();
            let given = headers
                .get(header.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix(prefix.as_str()))
                .and_then(|hex| decode_hex(hex.trim()))
                .ok_or(StatusCode::UNAUTHORIZED)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
            mac.update(body);
            // verify_slice compares in constant time.
            mac.verify_slice(&given)
                .map_err(|_| StatusCode::UNAUTHORIZED)
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn event_data(hook: &WebhookConfig, headers: &hyper::HeaderMap, body: &[u8]) -> serde_json::Value {
    let mut data = request_data(hook, headers);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(parsed) if !body.is_empty() => data["body"] = parsed,
        _ if body.is_empty() => data["body"] = serde_json::Value::Null,
        _ => {
            data["bodyBase64"] = base64::engine::general_purpose::STANDARD
                .encode(body)
                .into()
        }
    }
    data
}

/// The request's selected headers and content type (the body goes next to them).
fn request_data(hook: &WebhookConfig, headers: &hyper::HeaderMap) -> serde_json::Value {
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let selected: serde_json::Map<String, serde_json::Value> = hook
        .headers
        .iter()
        .filter_map(|name| {
            let value = headers.get(name.as_str())?.to_str().ok()?;
            Some((name.clone(), value.into()))
        })
        .collect();
    serde_json::json!({ "headers": selected, "contentType": content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
