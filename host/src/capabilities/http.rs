//! `http`: outbound requests sent by the host, only to granted destinations.
//!
//! Redirects are followed by hand (at most 10), each hop checked against the
//! grants like the first request and counted against the per-run request
//! cap. When a redirect leaves the origin only a small safelist of headers
//! goes along ([`CROSS_ORIGIN_HEADERS`]: no credentials, no API keys, no
//! custom headers), and a 307/308 — which would re-send the body — is not
//! followed. A host name must not resolve to loopback, link-local or the
//! engine's own listener unless its grant allows it ([`super::egress`]). A
//! whole exchange, redirects and body included, must fit the per-request
//! timeout, and the body the response-size cap. In a dry run, a request other
//! than GET or HEAD is checked like any other and then not sent: the guest gets
//! `202` with `x-wasmtrigger-dry-run: true` and no body.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use super::Capabilities;
use super::bindings::WitError;
use super::bindings::wasmtrigger::plugin::http::{Header, Host, Request, Response};
use super::{ActionAccess, Capability, egress};
use crate::config::grants::HttpGrant;

const MAX_REDIRECTS: usize = 10;

/// Headers kept when a redirect leaves the origin; everything else is dropped.
pub const CROSS_ORIGIN_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "user-agent",
];

impl Host for Capabilities {
    async fn send(&mut self, request: Request) -> Result<Response, WitError> {
        let body = request.body.as_deref().unwrap_or_default();
        let args = format!(
            "{} {} ({} header(s), {})",
            request.method.to_ascii_uppercase(),
            request.url,
            request.headers.len(),
            body_summary(body)
        );
        self.traced(
            ("http", "send"),
            args,
            replayed_response,
            |r| {
                serde_json::json!({
                    "status": r.status,
                    "headers": r.headers.iter().map(|h| [&h.name, &h.value]).collect::<Vec<_>>(),
                    "body": String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]),
                    "bodyBytes": r.body.len(),
                    "bodySha256": crate::runs::recording::sha256_hex(&r.body),
                })
            },
            async |c: &mut Self| c.send_checked(request).await,
        )
        .await
    }
}

/// What a dry run answers instead of sending a request that is not GET or
/// HEAD: `202` with `x-wasmtrigger-dry-run: true` and no body.
fn dry_run_response() -> Response {
    Response {
        status: 202,
        headers: vec![Header {
            name: "x-wasmtrigger-dry-run".into(),
            value: "true".into(),
        }],
        body: Vec::new(),
    }
}

/// A recorded response, when the recording holds all of its body.
fn replayed_response(answer: serde_json::Value) -> Option<Response> {
    let body = answer["body"].as_str()?.as_bytes().to_vec();
    let whole = answer["bodyBytes"].as_u64() == Some(body.len() as u64)
        && answer["bodySha256"].as_str() == Some(&crate::runs::recording::sha256_hex(&body));
    if !whole {
        return None;
    }
    let headers = answer["headers"]
        .as_array()?
        .iter()
        .filter_map(|h| {
            Some(Header {
                name: h.get(0)?.as_str()?.to_string(),
                value: h.get(1)?.as_str()?.to_string(),
            })
        })
        .collect();
    Some(Response {
        status: u16::try_from(answer["status"].as_u64()?).ok()?,
        headers,
        body,
    })
}

/// `N-byte body, sha256 …` (or `no body`) for a recorded request.
fn body_summary(body: &[u8]) -> String {
    if body.is_empty() {
        return "no body".into();
    }
    let hash = crate::runs::recording::sha256_hex(body);
    format!("{}-byte body, sha256 {}", body.len(), &hash[..16])
}

impl Capabilities {
    /// `send`, every check included.
    async fn send_checked(&mut self, request: Request) -> Result<Response, WitError> {
        let caps = self;
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
            let asked = describe(&request.method, &request.url);
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
            let asked = describe(method.as_str(), &request.url);
            return Err(caps.deny(
                Capability::Http,
                &asked,
                "destination not granted to this trigger",
            ));
        }
        if caps.dry_run.is_some() && method != Method::GET && method != Method::HEAD {
            return Ok(dry_run_response());
        }
        let exchange = Exchange {
            services: caps.services.clone(),
            access,
            method,
            url,
            headers,
            body: request.body,
            // The first request is counted already.
            left: caps.access.as_ref().map_or(0, |a| {
                a.http.max_requests.saturating_sub(caps.http_requests)
            }),
            hops: 0,
        };
        let timeout = exchange.access.http.timeout;
        let (outcome, hops) = match tokio::time::timeout(timeout, exchange.run()).await {
            Ok((outcome, hops)) => (Ok(outcome), hops),
            Err(_) => (Err(()), 0),
        };
        caps.http_requests = caps.http_requests.saturating_add(hops);
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Refusal::Denied(asked, reason))) => {
                Err(caps.deny(Capability::Http, &asked, &reason))
            }
            Ok(Err(Refusal::Error(e))) => Err(e),
            Err(()) => Err(WitError::Failed(format!(
                "request did not complete within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// The grant that allows `url`, preferring one that allows internal addresses.
fn grant_for<'a>(access: &'a ActionAccess, url: &Url) -> Option<&'a HttpGrant> {
    let mut matching = access.grants.http.iter().filter(|g| g.allows(url));
    let first = matching.next()?;
    Some(
        std::iter::once(first)
            .chain(matching)
            .find(|g| g.allows_internal())
            .unwrap_or(first),
    )
}

fn allowed(access: &ActionAccess, url: &Url) -> bool {
    grant_for(access, url).is_some()
}

/// What was asked, for logs: method and URL without query or credentials; the
/// path is hidden too if the URL holds a secret value (webhook URLs often are secrets).
fn describe(method: &str, url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return format!("{method} <invalid URL>");
    };
    let origin = format!(
        "{}://{}:{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default(),
        parsed.port_or_known_default().unwrap_or_default()
    );
    if crate::redact::contains_secret(url) {
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
    services: std::sync::Arc<super::HostServices>,
    access: std::sync::Arc<ActionAccess>,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    /// Requests this run may still send (redirects count).
    left: u32,
    /// Redirects followed.
    hops: u32,
}

impl Exchange {
    /// Runs the exchange; also returns how many redirects it followed.
    async fn run(mut self) -> (Result<Response, Refusal>, u32) {
        let outcome = self.exchange().await;
        (outcome, self.hops)
    }

    async fn exchange(&mut self) -> Result<Response, Refusal> {
        for _ in 0..=MAX_REDIRECTS {
            let client = self.client_for_hop().await?;
            let mut builder = client
                .request(self.method.clone(), self.url.clone())
                .headers(self.headers.clone());
            if let Some(body) = &self.body {
                builder = builder.body(body.clone());
            }
            // reqwest's error text names the URL, which may hold a secret: drop it.
            let mut response = builder.send().await.map_err(|e| {
                WitError::Failed(format!("request failed: {}", error_chain(&e.without_url())))
            })?;
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

    /// The client for the current URL: its grant decides whether the host
    /// name may resolve to internal addresses.
    async fn client_for_hop(&self) -> Result<reqwest::Client, Refusal> {
        let Some(grant) = grant_for(&self.access, &self.url) else {
            return Err(Refusal::Denied(
                origin(&self.url),
                "destination not granted to this trigger".into(),
            ));
        };
        if grant.allows_internal() {
            return Ok(self.services.http_internal.clone());
        }
        if let Some(url::Host::Domain(host)) = self.url.host() {
            let port = self.url.port_or_known_default().unwrap_or(80);
            egress::check_host(host, port, self.services.own_listener)
                .await
                .map_err(|reason| Refusal::Denied(origin(&self.url), reason))?;
        }
        Ok(self.services.http.clone())
    }

    /// Moves to the redirect target if it is granted and the request cap
    /// allows another request, adjusting method, body and headers.
    fn follow(&mut self, status: StatusCode, location: &HeaderValue) -> Result<(), Refusal> {
        let target = location
            .to_str()
            .ok()
            .and_then(|l| self.url.join(l).ok())
            .ok_or_else(|| WitError::Failed("redirect with an invalid Location".into()))?;
        let asked = format!("{} redirect to {}", status.as_u16(), origin(&target));
        if !allowed(&self.access, &target) {
            return Err(Refusal::Denied(
                asked,
                "redirect target not granted to this trigger".into(),
            ));
        }
        if self.left == 0 {
            return Err(Refusal::Denied(
                asked,
                format!(
                    "request limit of {} per run reached (redirects count as requests)",
                    self.access.http.max_requests
                ),
            ));
        }
        let cross_origin = target.origin() != self.url.origin();
        // 301/302/303 turn into GET without a body (as browsers and curl do); 307/308 repeat as is.
        if matches!(status.as_u16(), 301..=303) && self.method != Method::HEAD {
            self.method = Method::GET;
            self.body = None;
            self.headers.remove(reqwest::header::CONTENT_TYPE);
            self.headers.remove(reqwest::header::CONTENT_LENGTH);
        } else if cross_origin && self.body.is_some() {
            return Err(Refusal::Denied(
                asked,
                "a 307/308 redirect to another origin would re-send the request body; not followed"
                    .into(),
            ));
        }
        if cross_origin {
            let kept: HeaderMap = self
                .headers
                .iter()
                .filter(|(name, _)| CROSS_ORIGIN_HEADERS.contains(&name.as_str()))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            self.headers = kept;
        }
        self.left -= 1;
        self.hops += 1;
        self.url = target;
        Ok(())
    }
}

/// `scheme://host:port` of a URL, for logs (never its path or query).
fn origin(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// An error with its causes, so a refusal by the resolver is explained.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
