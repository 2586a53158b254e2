//! Real message brokers on loopback for the tests: `nats-server` with
//! JetStream on a temporary directory, and `mosquitto`. Each gets a free
//! port, can be restarted on it, and is stopped on drop. Messages are
//! published with clients nobody here wrote: nats-py (through
//! `tests/python/nats_client.py`) and `mosquitto_pub`.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pyclient;

/// A free loopback port: neither server can bind port 0 and report it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A server binary: on PATH, else where Debian puts it (/usr/sbin is not
/// on every user's PATH).
fn server_binary(name: &str) -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin").join(name);
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()));
    if !on_path && sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
}

/// A running nats-server with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    user: Option<(String, String)>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port (needs `nats-server`: scripts/setup installs it).
    pub fn start() -> Self {
        Self::start_with_user(None)
    }

    /// Starts a server that only lets `user`:`password` in.
    pub fn start_with_user(user: Option<(&str, &str)>) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            user: user.map(|(u, p)| (u.to_string(), p.to_string())),
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_binary("nats-server"));
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(&self.dir);
        if let Some((user, pass)) = &self.user {
            cmd.args(["--user", user, "--pass", pass]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/setup installs it)");
        self.child = Some(child);
        wait_listening(self.port, "nats-server");
    }

    /// Stops the server and starts it again on the same port and store.
    pub fn restart(&mut self, down_for: Duration) {
        stop(&mut self.child);
        std::thread::sleep(down_for);
        self.spawn();
    }

    /// `nats://[user:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.user {
            Some((u, p)) => format!("nats://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn client(&self, args: &[&str], stdin: &[u8]) -> String {
        let url = self.url();
        let mut all = vec![url.as_str()];
        all.extend_from_slice(args);
        pyclient("nats_client.py", &all, stdin)
    }

    /// Creates a file-backed stream capturing `subjects`.
    pub fn stream(&self, name: &str, subjects: &[&str]) {
        let mut args = vec!["stream", name];
        args.extend_from_slice(subjects);
        self.client(&args, b"");
    }

    /// Publishes `count` messages `{"n": i}` for i from `start`, each stored before the next batch.
    pub fn publish(&self, subject: &str, start: usize, count: usize) {
        let (start, count) = (start.to_string(), count.to_string());
        self.client(&["publish", subject, &count, &start], b"");
    }

    /// Publishes one message of exactly these bytes.
    pub fn publish_raw(&self, subject: &str, payload: &[u8]) {
        self.client(&["raw", subject], payload);
    }

    /// The messages a stream holds on `subject`: `{subject, headers, data}` each.
    pub fn read(&self, stream: &str, subject: &str) -> Vec<Value> {
        self.client(&["read", stream, subject], b"")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// `num_pending`, `num_ack_pending`, … of a consumer, or None before it exists.
    pub fn consumer(&self, stream: &str, name: &str) -> Option<Value> {
        let url = self.url();
        let out = Command::new(super::tools().join("pyclient/bin/python"))
            .arg(super::repo().join("tests/python/nats_client.py"))
            .args([url.as_str(), "consumer", stream, name])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the consumer has nothing left to deliver or to hear back about.
    pub fn wait_drained(&self, stream: &str, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let state = self.consumer(stream, name);
            if let Some(s) = &state
                && s["num_pending"] == 0
                && s["num_ack_pending"] == 0
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "consumer {stream}/{name} not drained: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running mosquitto broker (persistence on, so a restart keeps sessions).
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts a broker on a free port (needs `mosquitto`: scripts/setup installs it).
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut broker = Mosquitto {
            child: None,
            port: free_port(),
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\n",
            self.port,
            self.dir.display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new(server_binary("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/setup installs it)");
        self.child = Some(child);
        wait_listening(self.port, "mosquitto");
    }

    /// Stops the broker (it saves its sessions) and starts it again on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        stop(&mut self.child);
        std::thread::sleep(down_for);
        self.spawn();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Publishes `payload` (any bytes) as one QoS 1 message on `topic`.
    pub fn publish_file(&self, topic: &str, payload: &[u8]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic, "-s"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub is installed (scripts/setup installs mosquitto-clients)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(payload)
            .expect("write to mosquitto_pub");
        let out = child.wait_with_output().expect("mosquitto_pub ran");
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes each line of `lines` as one QoS 1 message on `topic` with
    /// `mosquitto_pub` (extra arguments: `-V 5`, `-D publish user-property k v`, …).
    pub fn publish_lines(&self, topic: &str, lines: &[String], extra: &[&str]) {
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-q", "1", "-t", topic, "-l"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub is installed (scripts/setup installs mosquitto-clients)");
        {
            let mut stdin = child.stdin.take().expect("stdin");
            for line in lines {
                writeln!(stdin, "{line}").expect("write to mosquitto_pub");
            }
        }
        let out = child.wait_with_output().expect("mosquitto_pub ran");
        assert!(
            out.status.success(),
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
