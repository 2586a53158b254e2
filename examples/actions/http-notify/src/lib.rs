//! POSTs a Slack-compatible message (`{"text": ...}`) about each event.
//!
//! Params (all but one of `url`/`urlSecret` optional):
//! - `url`: the webhook URL, or `urlSecret`: the name of a secret holding it
//!   (Slack webhook URLs are credentials);
//! - `tokenSecret`: name of a secret sent as `Authorization: Bearer <token>`;
//! - `text`: message template; `{trigger}`, `{source}`, `{kind}`, `{id}`,
//!   `{time}` and `{data}` are replaced.
//!
//! Grants needed: `http` for the webhook's host, `secrets` for the names used.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::json;
use wasmtrigger_guest::{Action, Event, export_action, http, info, params_as, secrets};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    url: Option<String>,
    url_secret: Option<String>,
    token_secret: Option<String>,
    text: Option<String>,
}

const DEFAULT_TEXT: &str =
    "wasmtrigger: {trigger} got `{kind}` from {source} at {time} (event {id})";

fn secret(name: &str) -> Result<String, String> {
    secrets::get(name).map_err(|e| format!("secret {name}: {}", e.describe()))
}

struct Notify;

impl Action for Notify {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        let url = match (p.url, p.url_secret) {
            (Some(url), None) => url,
            (None, Some(name)) => secret(&name)?,
            _ => return Err("params need exactly one of `url` or `urlSecret`".into()),
        };
        let text = p
            .text
            .as_deref()
            .unwrap_or(DEFAULT_TEXT)
            .replace("{trigger}", &event.trigger)
            .replace("{source}", &event.source)
            .replace("{kind}", &event.kind)
            .replace("{id}", &event.id)
            .replace("{time}", &event.time)
            .replace("{data}", &event.data);
        let mut headers = Vec::new();
        if let Some(name) = &p.token_secret {
            headers.push(http::header(
                "authorization",
                &format!("Bearer {}", secret(name)?),
            ));
        }
        let response = http::post_json(&url, &json!({ "text": text }), headers)
            .map_err(|e| format!("webhook: {}", e.describe()))?;
        if !response.is_success() {
            let body: String = response.text().chars().take(200).collect();
            return Err(format!("webhook answered {}: {body}", response.status));
        }
        info!("notified about event {}", event.id);
        Ok(json!({ "status": response.status }).to_string())
    }
}

export_action!(Notify);
