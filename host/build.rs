//! Builds the builtin modules (examples of general use) for wasm32-wasip2 in
//! release and embeds them, pinned by SHA-256, into the binary.
//!
//! The host must still build without the wasm target: when it is missing,
//! or the guest build fails, the binary gets no builtins and says so when a
//! config uses one (`builtin:NAME` is then a located error naming the fix).
//! `WASMTRIGGER_BUILTINS_DIR=DIR` takes prebuilt `NAME.wasm` files from DIR
//! instead (packagers, image builds); `WASMTRIGGER_BUILTINS=off` skips them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (name, crate directory under examples/, world).
const BUILTINS: &[(&str, &str, &str)] = &[
    ("bump-revision", "actions/bump-revision", "action"),
    ("create-job", "actions/create-job", "action"),
    ("http-notify", "actions/http-notify", "action"),
    ("log-event", "actions/log-event", "action"),
    ("patch-resource", "actions/patch-resource", "action"),
    ("ready-replicas", "filters/ready-replicas", "filter"),
    ("record-event", "actions/record-event", "action"),
];

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let examples = manifest_dir.join("../examples");
    let out = PathBuf::from(env("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=WASMTRIGGER_BUILTINS");
    println!("cargo:rerun-if-env-changed=WASMTRIGGER_BUILTINS_DIR");
    for dir in [
        "actions",
        "filters",
        "Cargo.toml",
        "Cargo.lock",
        "../guest-sdk",
    ] {
        println!("cargo:rerun-if-changed={}", examples.join(dir).display());
    }
    let built = match std::env::var("WASMTRIGGER_BUILTINS").as_deref() {
        Ok("off") => Err("WASMTRIGGER_BUILTINS=off".to_string()),
        _ => match std::env::var_os("WASMTRIGGER_BUILTINS_DIR") {
            Some(dir) => Ok(PathBuf::from(dir)),
            None => build(&examples, &out),
        },
    };
    let mut table = String::from("&[\n");
    let missing = match built {
        Ok(dir) => {
            for (name, krate, world) in BUILTINS {
                let wasm = dir.join(format!("{}.wasm", name.replace('-', "_")));
                let wasm = if wasm.is_file() {
                    wasm
                } else {
                    dir.join(format!("{name}.wasm"))
                };
                let Ok(bytes) = std::fs::read(&wasm) else {
                    println!(
                        "cargo:warning=builtin `{name}` missing: {} not found",
                        wasm.display()
                    );
                    continue;
                };
                let embedded = out.join(format!("{name}.wasm"));
                std::fs::write(&embedded, &bytes).expect("write the embedded module");
                let schema = examples.join(krate).join("params.schema.json");
                let version = crate_version(&examples.join(krate).join("Cargo.toml"));
                table.push_str(&format!(
                    "    Builtin {{ name: {name:?}, world: {world:?}, version: {version:?}, sha256: {:?}, wasm: include_bytes!({:?}), schema: include_str!({:?}), about: {:?}, grants: {:?} }},\n",
                    sha256_hex(&bytes),
                    embedded.display().to_string(),
                    schema.display().to_string(),
                    about(&examples.join(krate).join("src/lib.rs")),
                    grants(&examples.join(krate).join("src/lib.rs")),
                ));
            }
            String::new()
        }
        Err(why) => {
            println!("cargo:warning=built without builtin modules: {why}");
            why
        }
    };
    table.push(']');
    std::fs::write(out.join("builtins.rs"), format!(
        "/// The embedded builtins.\npub static BUILTINS: &[Builtin] = {table};\n/// Why there are none, if there are none.\npub static MISSING: &str = {missing:?};\n"
    ))
    .expect("write builtins.rs");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// Builds the examples workspace into the guests' target directory (shared
/// with `scripts/build-guests`, which builds the same crates the same way).
fn build(examples: &Path, out: &Path) -> Result<PathBuf, String> {
    // OUT_DIR is TARGET/PROFILE/build/PKG-HASH/out.
    let target = out
        .ancestors()
        .nth(4)
        .ok_or("cannot place the guest target directory")?
        .join("guests");
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(listed) = rustup
        && !String::from_utf8_lossy(&listed.stdout).contains("wasm32-wasip2")
    {
        return Err(
            "the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2)".into(),
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(examples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    for (name, _, _) in BUILTINS {
        command.args(["-p", name]);
    }
    // The outer build's settings are not the guests' (clippy's wrapper, host flags).
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo for the guests: {e}"))?;
    if !status.success() {
        return Err(format!("building the guests failed ({status})"));
    }
    Ok(target.join("wasm32-wasip2/release"))
}

fn crate_version(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(String::from)
        })
        .unwrap_or_else(|| workspace_version(manifest))
}

fn workspace_version(manifest: &Path) -> String {
    let root = manifest.ancestors().nth(3).map(|p| p.join("Cargo.toml"));
    root.and_then(|r| std::fs::read_to_string(r).ok())
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("version = \"")?
                    .strip_suffix('"')
                    .map(String::from)
            })
        })
        .unwrap_or_else(|| "0.0.0".into())
}

/// The first line of the crate's module doc.
fn about(lib: &Path) -> String {
    let text = std::fs::read_to_string(lib).unwrap_or_default();
    let mut about = String::new();
    for line in text.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim();
        if doc.is_empty() {
            break;
        }
        if !about.is_empty() {
            about.push(' ');
        }
        about.push_str(doc);
    }
    about
}

/// The module doc's `Grants needed:` sentence (up to the paragraph's end), or `none`.
fn grants(lib: &Path) -> String {
    let text = std::fs::read_to_string(lib).unwrap_or_default();
    let doc: Vec<&str> = text
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let Some(start) = doc.iter().position(|l| l.starts_with("Grants needed:")) else {
        return "none".into();
    };
    let mut needed = Vec::new();
    for line in &doc[start..] {
        if line.is_empty() {
            break;
        }
        needed.push(line.trim_start_matches("Grants needed:").trim());
    }
    needed.join(" ")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
