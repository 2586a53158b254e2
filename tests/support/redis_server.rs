//! A real `redis-server` on loopback for the tests: its own port, its own
//! data directory (append-only file on, so a restart keeps the streams), and
//! a few helpers over the `redis` client.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

/// A running redis-server, stopped on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port (needs `redis-server`: scripts/setup installs it).
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        // redis cannot bind port 0; take a free port from the kernel and hand it over.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            _tmp: tmp,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut con) = self.connection()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: it writes its data) and starts it again on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A synchronous connection.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// Appends `n` entries `{"n": i}` (as the `data` field) and returns their ids in order.
    pub fn fill(&self, stream: &str, n: usize) -> Vec<String> {
        let mut con = self.connection().expect("connect");
        let mut ids = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut pipe = redis::pipe();
            for i in chunk {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("data")
                    .arg(format!("{{\"n\":{i}}}"));
            }
            let chunk_ids: Vec<String> = pipe.query(&mut con).expect("XADD");
            ids.extend(chunk_ids);
        }
        ids
    }

    /// `(lag, pending)` of a consumer group, or None before it exists.
    pub fn group(&self, stream: &str, group: &str) -> Option<(i64, i64)> {
        let mut con = self.connection().ok()?;
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query(&mut con)
            .ok()?;
        let Value::Array(groups) = reply else {
            return None;
        };
        groups.into_iter().find_map(|g| {
            let Value::Array(items) = g else { return None };
            let mut name = None;
            let (mut lag, mut pending) = (None, None);
            for kv in items.chunks(2) {
                let key = match &kv[0] {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => continue,
                };
                match (key.as_str(), &kv[1]) {
                    ("name", Value::BulkString(b)) => {
                        name = Some(String::from_utf8_lossy(b).into_owned())
                    }
                    ("lag", Value::Int(i)) => lag = Some(*i),
                    ("pending", Value::Int(i)) => pending = Some(*i),
                    _ => {}
                }
            }
            (name.as_deref() == Some(group)).then_some((lag?, pending?))
        })
    }

    /// Waits until every entry of the group has been delivered and acknowledged.
    pub fn wait_drained(&self, stream: &str, group: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.group(stream, group) == Some((0, 0)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue {stream} not drained: (lag, pending) = {:?}",
                self.group(stream, group)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All entries of a stream as (id, field map).
    pub fn entries(&self, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut con = self.connection().expect("connect");
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut con)
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|e| {
                let mut fields: Vec<(String, String)> = e
                    .map
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                            other => format!("{other:?}"),
                        };
                        (k, text)
                    })
                    .collect();
                fields.sort();
                (e.id, fields)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
