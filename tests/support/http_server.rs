//! A real HTTP/1.1 server on 127.0.0.1:0 for the capability tests, built on
//! hyper. It records every request it receives, so tests can prove that a
//! denied request never reached it.
//!
//! Routes: `/echo` (the request back as JSON), `/redirect?to=URL&code=302`,
//! `/big?bytes=N`, `/slow?ms=N`, `/json?value=X` (`{"value": X}`), anything
//! else 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A running server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves until dropped (needs a tokio runtime).
    pub async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The grant pattern for this server.
    pub fn grant(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn handle(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (to, code, bytes, ms, value) = (
        query(&req, "to"),
        query(&req, "code"),
        query(&req, "bytes"),
        query(&req, "ms"),
        query(&req, "value"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let response = match path.as_str() {
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> =
                headers.into_iter().map(|(n, v)| (n, v.into())).collect();
            let json = serde_json::json!({"method": method, "path": path, "headers": headers, "body": body});
            Response::builder()
                .header("content-type", "application/json")
                .header("x-served-by", "test-server")
                .body(Full::new(Bytes::from(json.to_string())))
        }
        "/redirect" => Response::builder()
            .status(code.and_then(|c| c.parse::<u16>().ok()).unwrap_or(302))
            .header("location", to.unwrap_or_default())
            .body(Full::new(Bytes::new())),
        "/big" => {
            let n: usize = bytes.and_then(|b| b.parse().ok()).unwrap_or(1 << 20);
            Response::builder().body(Full::new(Bytes::from(vec![b'x'; n])))
        }
        "/slow" => {
            let ms: u64 = ms.and_then(|m| m.parse().ok()).unwrap_or(5000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::builder().body(Full::new(Bytes::from("finally")))
        }
        "/json" => {
            let value: f64 = value.and_then(|v| v.parse().ok()).unwrap_or(1.0);
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::json!({"value": value}).to_string(),
                )))
        }
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::from("not found"))),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::from("bad response")))))
}
