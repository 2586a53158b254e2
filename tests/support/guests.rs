//! The guest modules under test, built once per test process: the Rust
//! examples and test guests, and (slower) the Python and JavaScript ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::repo;

/// The directory holding the built example and test modules (built once per process).
pub fn modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"));
        let out = target.join("test-modules");
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/build-guests")).arg(&out);
        // Build flags meant for the host must not leak into the wasm build.
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER"] {
            cmd.env_remove(var);
        }
        let status = cmd.status().expect("cannot run scripts/build-guests");
        assert!(
            status.success(),
            "building the guest modules failed; is the target installed? (rustup target add wasm32-wasip2)"
        );
        out
    })
}

/// The Python and JavaScript example modules (built once per process, slow:
/// seconds per component; unchanged components are not rebuilt).
pub fn language_modules() -> &'static Path {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = modules();
        for script in [
            &["scripts/setup", "--guests"][..],
            &["scripts/build-guests", "--lang", "python,js,c,cpp"][..],
        ] {
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join(script[0])).args(&script[1..]);
            if script[0].ends_with("build-guests") {
                cmd.arg(dir);
            }
            let status = cmd.status().expect("run a guest build script");
            assert!(
                status.success(),
                "{script:?} failed: are python3, node, npm and apt-get (for clang) available?"
            );
        }
    });
    modules()
}

/// A compiled-module cache shared by the tests, so most engine starts skip compiling.
pub fn shared_cache() -> PathBuf {
    modules().parent().unwrap().join("test-module-cache")
}

/// Path of one built module.
pub fn module(name: &str) -> PathBuf {
    modules().join(name)
}
