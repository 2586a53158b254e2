//! The container image, built here without pulling anything
//! (`scripts/build-image`: a Debian root filesystem from Debian packages,
//! imported with podman) and run with podman the way a cluster runs it: a
//! read-only root filesystem, uid 65532, the API token from a mounted file.
//! `/readyz` answers, the quickstart's triggers run, SIGTERM stops it cleanly.
//!
//! On these machines podman's default runtime, crun, refuses the host's
//! hybrid cgroup layout and podman's default rlimits exceed what the
//! container may set, so the run uses runc and the host's own limits
//! (deploy/README.md says the same for operators).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, DEADLINE, Workspace};

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman is installed (scripts/setup installs it)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes the container and the image however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-v", &self.container]);
        podman(&["rmi", "-f", &self.image]);
    }
}

/// The engine's answer to a GET, with the bearer token if given: (status, body).
fn get(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut request = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().unwrap_or_default()))
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>, log: impl Fn() -> String) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hard_nofile() -> String {
    let out = Command::new("bash")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_image_runs_read_only_as_nonroot_and_stops_cleanly_on_sigterm() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let cleanup = Cleanup {
        container: format!("wasmtrigger-test-{id}"),
        image: format!("localhost/wasmtrigger-test:{id}"),
    };
    let build = Command::new("bash")
        .arg(support::repo().join("scripts/build-image"))
        .args(["--binary", support::binary(), "--tag", &cleanup.image])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "build-image: {}", text(&build));

    // The image says how it runs: the Dockerfile's user, settings and entry point.
    let config: Value = serde_json::from_slice(
        &podman(&[
            "image",
            "inspect",
            &cleanup.image,
            "--format",
            "{{json .Config}}",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/wasmtrigger");
    assert_eq!(config["Cmd"][0], "run");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // ... the same as the Dockerfile's, which users with a registry build.
    let dockerfile = std::fs::read_to_string(support::repo().join("Dockerfile")).unwrap();
    let from_dockerfile: Vec<String> = dockerfile
        .split_once("\nENV ")
        .map(|(_, rest)| {
            rest.lines()
                .take_while(|l| !l.starts_with("EXPOSE"))
                .flat_map(|l| l.trim_end_matches('\\').split_whitespace())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert!(from_dockerfile.len() >= 5, "{from_dockerfile:?}");
    for expected in &from_dockerfile {
        assert!(env.contains(&expected.as_str()), "{expected} in {env:?}");
    }
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/wasmtrigger\"]"));

    let ws = Workspace::new();
    let token = "a-token-only-this-test-knows-0123456789";
    let token_file = ws.write("api-token", token);
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nofile = format!("nofile={0}:{0}", hard_nofile());
    let listen = format!("LISTEN=127.0.0.1:{port}");
    let secret = format!("{}:/run/secrets/api-token:ro", token_file.display());
    let run = podman(&[
        "--runtime",
        "runc",
        "run",
        "--detach",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "--read-only",
        "--ulimit",
        &nofile,
        "--ulimit",
        "nproc=4096:4096",
        "--env",
        &listen,
        "--volume",
        &secret,
        &cleanup.image,
    ]);
    assert!(run.status.success(), "podman run: {}", text(&run));
    let logs = || text(&podman(&["logs", &cleanup.container]));

    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        "/readyz answers 200",
        || get(&format!("{base}/readyz"), None).filter(|(s, _)| *s == 200),
        logs,
    );
    // The API wants the mounted token.
    let (status, _) = get(&format!("{base}/api/v1/triggers"), None).unwrap();
    assert_eq!(status, 401);
    // The quickstart's three triggers each succeed (tick-counter every 10 s,
    // writing kv state into the volume: the read-only root is no obstacle).
    wait_for(
        "every quickstart trigger has succeeded",
        || {
            let (status, body) = get(&format!("{base}/api/v1/triggers"), Some(token))?;
            let views: Value = serde_json::from_str(&body).ok()?;
            let views = views["triggers"].as_array()?.clone();
            (status == 200
                && views.len() == 3
                && views.iter().all(|v| v["successes"].as_u64() >= Some(1)))
            .then_some(())
        },
        logs,
    );

    let inspect = |format: &str| {
        String::from_utf8_lossy(
            &podman(&["inspect", &cleanup.container, "--format", format]).stdout,
        )
        .trim()
        .to_string()
    };
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(Path::new("/proc").join(&pid).join("status")).unwrap();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65532"),
        "runs as 65532: {uid}"
    );

    // SIGTERM (podman stop) drains and exits 0 well within the grace period.
    let stop = podman(&["stop", "--time", "30", &cleanup.container]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(inspect("{{.State.ExitCode}}"), "0", "{}", logs());
    let log = logs();
    assert!(log.contains("\"message\":\"engine stopped\""), "{log}");
    assert!(!log.contains(token), "the token never reaches the log");
}
