//! Routing of REST requests to the store, list paging, and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::Shared;
use crate::authz::{self, Identity};
use crate::discovery;
use crate::select::Selector;
use crate::store::{ApiError, Change, Part, Store, TypeId};
use crate::table;

type Body = BoxBody<Bytes, Infallible>;

/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, shared).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        connection(stream, shared).await;
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection.
async fn connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// The TLS acceptor of the HTTPS mode, with the checked-in test certificate.
pub(crate) fn test_tls() -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(include_bytes!("../certs/server.crt"))
            .collect::<Result<_, _>>()
            .expect("test certificate");
    let key =
        PrivateKeyDer::from_pem_slice(include_bytes!("../certs/server.key")).expect("test key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("test certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn fail(e: &ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

fn not_found(path: &str) -> Response<Body> {
    fail(&ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    ))
}

/// Where a request points.
struct Target {
    ty: TypeId,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{} {}", req.method(), req.uri()));
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Without a token of its own (and without RBAC) the server lets anyone in as the admin.
    let open = shared.token.is_none() && !shared.rbac;
    let identity = match presented {
        Some(p) if shared.token.as_deref() == Some(p) => Some(Identity::Admin),
        Some(p) => shared
            .service_accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(p)
            .cloned()
            .or(open.then_some(Identity::Admin)),
        None => open.then_some(Identity::Admin),
    };
    let Some(identity) = identity else {
        shared
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return fail(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    };
    if shared.rbac {
        let watching = req.uri().query().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
        if let Some(request) = authz::attributes(req.method().as_str(), req.uri().path(), watching)
            && !authz::allowed(&shared.lock(), &identity, &request)
        {
            let error = authz::forbidden(&identity, &request);
            shared
                .forbidden
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{} {}: {}", req.method(), req.uri(), error.message));
            return fail(&error);
        }
    }
    let method = req.method().clone();
    let full_uri = req.uri().to_string();
    let injected = {
        let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults
            .iter()
            .position(|f| {
                f.method.eq_ignore_ascii_case(method.as_str()) && full_uri.contains(&f.path)
            })
            .map(|i| faults.remove(i))
    };
    match injected {
        None => route(shared, req).await,
        Some(fault) if fault.after => {
            // The write happens; only its answer is lost (a timeout after commit).
            drop(route(shared, req).await);
            fail(&fault.error)
        }
        Some(fault) => fail(&fault.error),
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let types = shared.lock().types.clone();
    // Discovery.
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["version"]) => return full(StatusCode::OK, &discovery::version()),
        (Method::GET, ["api"]) => return full(StatusCode::OK, &discovery::core_versions()),
        (Method::GET, ["api", v]) => {
            return match discovery::resource_list(&types, "", v) {
                Some(doc) => full(StatusCode::OK, &doc),
                None => not_found(&path),
            };
        }
        (Method::GET, ["apis"]) => return full(StatusCode::OK, &discovery::groups(&types)),
        (Method::GET, ["apis", g]) => {
            return match discovery::group(&types, g) {
                Some(doc) => full(StatusCode::OK, &doc),
                None => not_found(&path),
            };
        }
        (Method::GET, ["apis", g, v]) => {
            return match discovery::resource_list(&types, g, v) {
                Some(doc) => full(StatusCode::OK, &doc),
                None => not_found(&path),
            };
        }
        _ => {}
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return not_found(&path),
    };
    let find = |plural: &str| {
        types.iter().position(|t| {
            t.served && t.group == group && t.version == version && t.plural == plural
        })
    };
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some() && tail.len() <= 2 => {
            Target {
                ty: find(plural).unwrap_or_default(),
                namespace: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                subresource: tail.get(1).map(|s| s.to_string()),
            }
        }
        [plural, tail @ ..] if find(plural).is_some() && tail.len() <= 2 => Target {
            ty: find(plural).unwrap_or_default(),
            namespace: None,
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
        },
        _ => return not_found(&path),
    };
    let namespaced = types[target.ty].namespaced;
    if namespaced && target.name.is_some() && target.namespace.is_none() {
        return not_found(&path);
    }
    let part = match target.subresource.as_deref() {
        None => Part::Main,
        Some("status") if types[target.ty].status => Part::Status,
        Some(_) => return not_found(&path),
    };
    let table = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wanted);
    let ns = if namespaced {
        target.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return fail(&ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("this test server speaks JSON only, not {content_type}"),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body)
            .or_else(|_| serde_yaml_ng::from_slice(&body))
            .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid body: {e}")))
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let list_ns = if namespaced {
        target.namespace.as_deref()
    } else {
        None
    };
    // DeleteOptions in a DELETE's body may ask for a dry run too (kubectl does so).
    let dry_in_body = method == Method::DELETE
        && serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|o| o["dryRun"].as_array().cloned())
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let dry = match query.get("dryRun").map(String::as_str) {
        None => dry_in_body,
        Some("All") => true,
        Some(other) => {
            return fail(&ApiError::new(
                400,
                "BadRequest",
                format!("Invalid dryRun value: {other:?}: the only supported value is \"All\""),
            ));
        }
    };
    let ty = target.ty;
    // A write runs under the store's lock, as a dry run when asked.
    let write = |op: &dyn Fn(&mut Store) -> Result<Value, ApiError>| {
        let mut store = shared.lock();
        if dry {
            store.dry_run(|s| op(s))
        } else {
            op(&mut store)
        }
    };
    let result = match (&method, &target.name) {
        (&Method::GET, None) if watching => {
            return watch(shared, ty, list_ns.map(str::to_string), &query, table);
        }
        (&Method::GET, None) => list(&shared, ty, list_ns, &query),
        (&Method::GET, Some(name)) => shared.lock().get(ty, &ns, name),
        (&Method::POST, None) if part == Part::Main => {
            json_body().and_then(|b| write(&|s: &mut Store| s.create_as(ty, &ns, b.clone(), part)))
        }
        (&Method::PUT, Some(name)) => json_body()
            .and_then(|b| write(&|s: &mut Store| s.update_as(ty, &ns, name, b.clone(), part))),
        (&Method::PATCH, Some(name)) => {
            let manager = query.get("fieldManager").map(String::as_str);
            write(&|s: &mut Store| s.patch_as(ty, &ns, name, &content_type, &body, manager, part))
        }
        (&Method::DELETE, Some(name)) if part == Part::Main => {
            write(&|s: &mut Store| s.delete(ty, &ns, name))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    };
    let result = match result {
        Ok(v) if table && method == Method::GET => {
            let store = shared.lock();
            Ok(table::of(&store.types[ty], &v))
        }
        other => other,
    };
    match result {
        Ok(v) => full(
            if method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &v,
        ),
        Err(e) => fail(&e),
    }
}

fn selectors(query: &HashMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let parse = |key: &str| {
        Selector::parse(query.get(key).map(String::as_str).unwrap_or_default()).map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("unable to parse requirement: {e}"),
            )
        })
    };
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

/// A list, paged with `limit` and `continue` (an opaque token naming where
/// to resume and the version the list was taken at).
fn list(
    shared: &Shared,
    ty: TypeId,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(query)?;
    let store = shared.lock();
    let t = &store.types[ty];
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (start_after, list_rv) = match query.get("continue").filter(|c| !c.is_empty()) {
        None => (None, store.rv()),
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .ok_or_else(|| ApiError::new(400, "BadRequest", "invalid continue token"))?;
            let rv = decoded["rv"].as_u64().unwrap_or_default();
            if rv < store.compacted() {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (
                Some((
                    decoded["ns"].as_str().unwrap_or_default().to_string(),
                    decoded["name"].as_str().unwrap_or_default().to_string(),
                )),
                rv,
            )
        }
    };
    let mut items = Vec::new();
    let mut next = None;
    for ((_, n, name), object) in store.list(ty, ns) {
        if let Some((sn, sname)) = &start_after
            && (n.as_str(), name.as_str()) <= (sn.as_str(), sname.as_str())
        {
            continue;
        }
        if !labels.matches_labels(&object) || !fields.matches_fields(&object) {
            continue;
        }
        if items.len() == limit {
            next = Some(
                json!({"ns": n, "name": items.last().map(|o: &Value| o["metadata"]["name"].clone()).unwrap_or_default(), "rv": list_rv}),
            );
            let last: &Value = items.last().expect("a full page has a last item");
            next = next.map(|mut t| {
                t["ns"] = last["metadata"]["namespace"].clone();
                if t["ns"].is_null() {
                    t["ns"] = "".into();
                }
                t
            });
            break;
        }
        items.push(object);
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(token) = next {
        metadata["continue"] = base64::engine::general_purpose::STANDARD
            .encode(token.to_string())
            .into();
        metadata["remainingItemCount"] = 1.into();
    }
    Ok(json!({
        "kind": format!("{}List", t.kind),
        "apiVersion": t.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch: chunked JSON lines until `timeoutSeconds`, a cut, or the client leaves.
fn watch(
    shared: Arc<Shared>,
    ty: TypeId,
    ns: Option<String>,
    query: &HashMap<String, String>,
    table: bool,
) -> Response<Body> {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: Option<u64> = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let (kind, api_version) = {
        let store = shared.lock();
        let plural = store.types[ty].plural.clone();
        *shared
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(plural)
            .or_default() += 1;
        (store.types[ty].kind.clone(), store.types[ty].api_version())
    };
    let mut cut = shared.cut.subscribe();
    cut.mark_unchanged();
    let selected = move |c: &Change| {
        c.ty == ty
            && ns
                .as_deref()
                .is_none_or(|n| c.object["metadata"]["namespace"].as_str() == Some(n))
            && labels.matches_labels(&c.object)
            && fields.matches_fields(&c.object)
    };
    // Subscribe and read the backlog under one lock: no change is missed or sent twice.
    let (mut live, backlog, mut last_rv) = {
        let store = shared.lock();
        match from {
            Some(rv) => {
                let (live, backlog) = store.subscribe(rv);
                (live, backlog, rv)
            }
            None => {
                // No version: the current state as ADDED events, then changes.
                let (live, _) = store.subscribe(store.rv());
                let current = store
                    .list(ty, None)
                    .into_iter()
                    .map(|(_, object)| Change {
                        rv: store.rv(),
                        kind: "ADDED",
                        ty,
                        object,
                    })
                    .collect();
                (live, Some(current), store.rv())
            }
        }
    };
    // Asked for Tables (`kubectl get -w`): each object becomes a one-row
    // Table; only the first carries the column definitions, as kube-apiserver does.
    let as_table = table.then(|| shared.lock().types[ty].clone());
    let first_table = std::sync::atomic::AtomicBool::new(true);
    let event_line = move |kind: &str, object: &Value| -> Bytes {
        match (&as_table, kind) {
            (Some(t), "ADDED" | "MODIFIED" | "DELETED") => {
                let mut rows = table::of(t, object);
                if !first_table.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    rows["columnDefinitions"] = json!([]);
                }
                event_line(kind, &rows)
            }
            _ => event_line(kind, object),
        }
    };
    tokio::spawn(async move {
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(Frame::data(bytes))).await.is_ok() }
        };
        let Some(backlog) = backlog else {
            shared
                .expired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let expired = ApiError::new(
                410,
                "Expired",
                format!(
                    "too old resource version: {} ({})",
                    from.unwrap_or_default(),
                    last_rv
                ),
            );
            let _ = send(event_line("ERROR", &expired.status())).await;
            return;
        };
        for change in backlog.iter().filter(|c| selected(c)) {
            if !send(event_line(change.kind, &change.object)).await {
                return;
            }
        }
        if let Some(c) = backlog.last() {
            last_rv = last_rv.max(c.rv);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = cut.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let mark = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}});
                    if !send(event_line("BOOKMARK", &mark)).await {
                        return;
                    }
                }
                change = live.recv() => match change {
                    Ok(change) => {
                        if change.rv <= last_rv {
                            continue;
                        }
                        last_rv = change.rv;
                        if selected(&change) && !send(event_line(change.kind, &change.object)).await {
                            return;
                        }
                    }
                    // Fell too far behind: end the watch, the client re-watches.
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let stream = Frames(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// An mpsc receiver as a stream of body frames.
struct Frames(mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl futures_core::Stream for Frames {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
