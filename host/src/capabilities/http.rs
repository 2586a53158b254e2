//! `http`: outbound requests sent by the host, only to granted destinations.
//!
//! Redirects are followed by hand (at most 10), each hop checked against the
//! grants like the first request; credentials are dropped when a redirect
//! leaves the origin. A whole exchange, redirects and body included, must fit
//! the per-request timeout, and the body the response-size cap.

use reqwest::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION,
};
use reqwest::{Method, StatusCode};
use url::Url;

use super::{ActionAccess, Capability};
use crate::capabilities::redact::Redactor;
use crate::runtime::HostState;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::wasmtrigger::plugin::http::{Header, Host, Request, Response};

const MAX_REDIRECTS: usize = 10;

impl Host for HostState {
    async fn send(&mut self, request: Request) -> Result<Response, WitError> {
        let caps = &mut self.caps;
        caps.count(Capability::Http);
        let Some(access) = caps.access.clone() else {
            return Err(caps.deny(
                Capability::Http,
                &request.method,
                "no HTTP access in this context",
            ));
        };
        caps.http_requests += 1;
        if caps.http_requests > access.http.max_requests {
            let asked = describe(&request.method, &request.url, &caps.redactor);
            let reason = format!(
                "request limit of {} per run reached",
                access.http.max_requests
            );
            return Err(caps.deny(Capability::Http, &asked, &reason));
        }
        let url =
            Url::parse(&request.url).map_err(|e| WitError::Invalid(format!("invalid URL: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(WitError::Invalid(format!(
                "unsupported URL scheme `{}`",
                url.scheme()
            )));
        }
        let method = Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| WitError::Invalid(format!("invalid method `{}`", request.method)))?;
        let headers = header_map(&request.headers)?;
        if !allowed(&access, &url) {
            let asked = describe(method.as_str(), &request.url, &caps.redactor);
            return Err(caps.deny(
                Capability::Http,
                &asked,
                "destination not granted to this trigger",
            ));
        }
        let exchange = Exchange {
            client: caps.services.http.clone(),
            access,
            method,
            url,
            headers,
            body: request.body,
        };
        let timeout = exchange.access.http.timeout;
        match tokio::time::timeout(timeout, exchange.run()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Refusal::Denied(asked, reason))) => {
                Err(caps.deny(Capability::Http, &asked, &reason))
            }
            Ok(Err(Refusal::Error(e))) => Err(e),
            Err(_) => Err(WitError::Failed(format!(
                "request did not complete within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

fn allowed(access: &ActionAccess, url: &Url) -> bool {
    access.grants.http.iter().any(|g| g.allows(url))
}

/// What was asked, for logs: method and URL without query or credentials; the
/// path is hidden too if the URL holds a secret value (webhook URLs often are secrets).
fn describe(method: &str, url: &str, redactor: &Redactor) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return format!("{method} <invalid URL>");
    };
    let origin = format!(
        "{}://{}:{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default(),
        parsed.port_or_known_default().unwrap_or_default()
    );
    if redactor.redact(url) != url {
        format!("{method} {origin}/[redacted]")
    } else {
        format!("{method} {origin}{}", parsed.path())
    }
}

fn header_map(headers: &[Header]) -> Result<HeaderMap, WitError> {
    let mut map = HeaderMap::new();
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WitError::Invalid(format!("invalid header name `{}`", h.name)))?;
        if name == reqwest::header::HOST {
            return Err(WitError::Invalid(
                "the `host` header is set from the URL".into(),
            ));
        }
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| WitError::Invalid(format!("invalid value for header `{}`", h.name)))?;
        map.append(name, value);
    }
    Ok(map)
}

enum Refusal {
    Denied(String, String),
    Error(WitError),
}

impl From<WitError> for Refusal {
    fn from(e: WitError) -> Self {
        Refusal::Error(e)
    }
}

/// One request and its redirects, owning everything it needs (no borrow of the store).
struct Exchange {
    client: reqwest::Client,
    access: std::sync::Arc<ActionAccess>,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl Exchange {
    async fn run(mut self) -> Result<Response, Refusal> {
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = self
                .client
                .request(self.method.clone(), self.url.clone())
                .headers(self.headers.clone());
            if let Some(body) = &self.body {
                builder = builder.body(body.clone());
            }
            // reqwest's error text names the URL, which may hold a secret: drop it.
            let mut response = builder
                .send()
                .await
                .map_err(|e| WitError::Failed(format!("request failed: {}", e.without_url())))?;
            let status = response.status();
            let location = response.headers().get(reqwest::header::LOCATION).cloned();
            if status.is_redirection()
                && let Some(location) = location
            {
                self.follow(status, &location)?;
                continue;
            }
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| Header {
                    name: n.as_str().to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                })
                .collect();
            let max = self.access.http.max_response_bytes;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                WitError::Failed(format!("reading the response failed: {}", e.without_url()))
            })? {
                if (body.len() + chunk.len()) as u64 > max {
                    return Err(WitError::Failed(format!(
                        "response body exceeds the {max}-byte limit"
                    ))
                    .into());
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body,
            });
        }
        Err(WitError::Failed(format!("more than {MAX_REDIRECTS} redirects")).into())
    }

    /// Moves to the redirect target if it is granted, adjusting method, body and credentials.
    fn follow(&mut self, status: StatusCode, location: &HeaderValue) -> Result<(), Refusal> {
        let target = location
            .to_str()
            .ok()
            .and_then(|l| self.url.join(l).ok())
            .ok_or_else(|| WitError::Failed("redirect with an invalid Location".into()))?;
        if !allowed(&self.access, &target) {
            let asked = format!(
                "{} redirect to {}://{}:{}",
                status.as_u16(),
                target.scheme(),
                target.host_str().unwrap_or_default(),
                target.port_or_known_default().unwrap_or_default()
            );
            return Err(Refusal::Denied(
                asked,
                "redirect target not granted to this trigger".into(),
            ));
        }
        // 301/302/303 turn into GET without a body (as browsers and curl do); 307/308 repeat as is.
        if matches!(status.as_u16(), 301..=303) && self.method != Method::HEAD {
            self.method = Method::GET;
            self.body = None;
            self.headers.remove(reqwest::header::CONTENT_TYPE);
            self.headers.remove(reqwest::header::CONTENT_LENGTH);
        }
        if target.origin() != self.url.origin() {
            for h in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                self.headers.remove(h);
            }
        }
        self.url = target;
        Ok(())
    }
}
