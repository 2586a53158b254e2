//! A client for a running engine's API, and the tables the CLI prints with it.

use serde_json::Value;

use wasmtrigger::engine::TriggerView;
use wasmtrigger::runs::store::RunQuery;
use wasmtrigger::runs::{RunRecord, RunStatus};

/// Errors talking to an engine.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No engine answered.
    #[error(
        "cannot reach the engine at {0}: {1} (is `wasmtrigger run` running there? see --server)"
    )]
    Unreachable(String, String),
    /// The engine answered with an error.
    #[error("the engine answered {0}: {1}")]
    Status(u16, String),
    /// The answer was not what the API returns.
    #[error("unexpected answer from the engine: {0}")]
    Protocol(String),
}

/// Talks to `/api/v1` of an engine.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the engine at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            ClientError::Unreachable(self.base.clone(), e.without_url().to_string())
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(e.without_url().to_string()))?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("no message").to_string();
            return Err(ClientError::Status(status.as_u16(), message));
        }
        Ok(value)
    }

    /// Replays a stored run inside the engine; `body` carries uploaded modules.
    pub async fn replay(&self, id: &str, body: Value) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{id}/replay"),
            Some(body),
        )
        .await
    }

    /// A trigger's shadow counts and latest comparisons.
    pub async fn shadow(&self, trigger: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/triggers/{trigger}/shadow"),
            None,
        )
        .await
    }

    /// Resubmits a trigger's recorded events; `body` selects them.
    pub async fn redrive(&self, trigger: &str, body: Value) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/triggers/{trigger}/redrive"),
            Some(body),
        )
        .await
    }

    /// Whether an engine answers at the address (its `/healthz`, which needs no token).
    pub async fn answers(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    }

    /// Runs matching a query, newest first.
    pub async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, ClientError> {
        let mut params = url::form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &query.trigger {
            params.append_pair("trigger", t);
        }
        if let Some(s) = query.status {
            params.append_pair("status", s.as_str());
        }
        if let Some(s) = &query.since {
            params.append_pair("since", s);
        }
        if let Some(e) = &query.event {
            params.append_pair("event", e);
        }
        if let Some(b) = &query.before {
            params.append_pair("before", b);
        }
        if let Some(l) = query.limit {
            params.append_pair("limit", &l.to_string());
        }
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/runs?{}", params.finish()),
                None,
            )
            .await?;
        serde_json::from_value(value["runs"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<RunRecord, ClientError> {
        let value = self
            .call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
            .await?;
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Every trigger with its history.
    pub async fn triggers(&self) -> Result<Vec<TriggerView>, ClientError> {
        let value = self
            .call(reqwest::Method::GET, "/api/v1/triggers", None)
            .await?;
        serde_json::from_value(value["triggers"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Fires a trigger by hand; returns the event id.
    pub async fn fire(&self, trigger: &str, data: Value) -> Result<String, ClientError> {
        let body = serde_json::json!({ "data": data });
        let value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/triggers/{trigger}/fire"),
                Some(body),
            )
            .await?;
        value["eventId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("no eventId in the answer".into()))
    }
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        one_line
            .chars()
            .take(max.saturating_sub(1))
            .collect::<String>()
            + "…"
    }
}

/// Runs as a table.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<9}  {:>3}  {:<24}  {:>8}  {}\n",
        "RUN ID", "TRIGGER", "STATUS", "ATT", "STARTED", "MS", "OUTPUT / ERROR"
    );
    for r in runs {
        let detail = match r.status {
            RunStatus::Failed => r.error.as_deref().unwrap_or(""),
            _ => r.output.as_deref().unwrap_or(""),
        };
        // An error starts with the module that failed, which the record names
        // anyway; the table's narrow column is for what went wrong.
        let detail = [r.module.as_deref(), r.filter.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|label| detail.strip_prefix(label))
            .map(str::trim_start)
            .unwrap_or(detail);
        out.push_str(&format!(
            "{:<36}  {:<20}  {:<9}  {:>3}  {:<24}  {:>8}  {}\n",
            r.run_id,
            short(&r.trigger, 20),
            r.status.as_str(),
            r.attempts.len(),
            r.started_at,
            r.duration_ms,
            short(detail, 60)
        ));
    }
    out
}

/// Triggers as a table (the columns of ORCA's `kubectl get tasks`).
pub fn triggers_table(triggers: &[TriggerView]) -> String {
    let mut out = format!(
        "{:<20}  {:<9}  {:<8}  {:<13}  {:>6}  {:<24}  {:<24}  {:>8}  {:<16}  {}\n",
        "NAME",
        "SOURCE",
        "STATE",
        "RUNS ON",
        "RUNS",
        "LAST SUCCESS",
        "LAST FAILURE",
        "FAILURES",
        "ON SUCCESS",
        "ON FAILURE"
    );
    for t in triggers {
        let s = &t.summary;
        out.push_str(&format!(
            "{:<20}  {:<9}  {:<8}  {:<13}  {:>6}  {:<24}  {:<24}  {:>8}  {:<16}  {}\n",
            short(&t.name, 20),
            t.source,
            t.state,
            // The stream's name is in the JSON; the table keeps its columns.
            match t.runs_on.split(" via ").next() {
                Some(on) if !on.is_empty() => on,
                _ => "-",
            },
            s.runs,
            s.last_success.as_deref().unwrap_or("-"),
            s.last_failure.as_deref().unwrap_or("-"),
            s.failures,
            short(&t.on_success.join(","), 16),
            t.on_failure.join(",")
        ));
    }
    out
}
