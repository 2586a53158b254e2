//! `wasmtrigger new`: writes a ready-to-build filter or action project in
//! Rust, Python or JavaScript. The templates and the WIT contract are built
//! into the binary, so the project needs nothing from this repository.

use std::path::{Path, PathBuf};

use wasmtrigger::runtime::World;

/// The pinned guest toolchains the Python and JavaScript templates use.
pub const PYTHON_TOOL: &str = "0.25.1";
/// See [`PYTHON_TOOL`].
pub const JS_TOOL: &str = "0.23.0";
/// wit-bindgen-cli and wasm-tools for C and C++ (guest-tools/c/versions).
pub const WIT_BINDGEN_TOOL: &str = "0.63.0";
/// See [`WIT_BINDGEN_TOOL`].
pub const WASM_TOOLS_TOOL: &str = "1.262.0";
/// Debian packages a C module needs, and those C++ adds.
const C_DEBIAN: &str = "clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32";
/// See [`C_DEBIAN`].
const CPP_DEBIAN: &str = "libc++-19-dev-wasm32 libc++abi-19-dev-wasm32 nlohmann-json3-dev";
/// Written next to a C or C++ project's code: `wasm-tools component new` wraps
/// the preview1 module with it.
const WASI_ADAPTER: (&str, &[u8]) = (
    "wasi_snapshot_preview1.reactor.wasm",
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
);

const WIT: &str = include_str!("../../../wit/plugin.wit");
const README: &str = include_str!("../../templates/README.md");
const SDK_LIB: &str = include_str!("../../../guest-sdk/src/lib.rs");
const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");
const SAMPLE_DEPLOYMENT: &str = include_str!("../../../examples/events/deployment-ready.json");

/// A guest language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust with wit-bindgen.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
    /// C with wit-bindgen's C bindings and clang.
    C,
    /// C++ with wit-bindgen's C bindings, clang and nlohmann/json.
    Cpp,
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not usable.
    #[error(
        "invalid project name `{0}`: use lowercase letters, digits and `-`, starting with a letter"
    )]
    Name(String),
    /// The target exists and is not empty.
    #[error("{0} already exists and is not empty")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The guest SDK's manifest made standalone: the workspace's shared values
/// written out, so the copy builds outside this repository.
fn sdk_manifest() -> String {
    SDK_MANIFEST
        .lines()
        .map(|line| match line.split_once(".workspace = true") {
            Some(("version", _)) => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            Some(("edition", _)) => "edition = \"2024\"".to_string(),
            Some(("license", _)) => format!("license = \"{}\"", env!("CARGO_PKG_LICENSE")),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `my-filter` -> `MyFilter`, the name of the type the module exports.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes the project into `dir` (created; must not hold files) and returns the files written.
pub fn scaffold(
    world: World,
    name: &str,
    lang: Lang,
    dir: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let filter = world == World::Filter;
    let sdk_manifest = sdk_manifest();
    let pick = |f: &'static str, a: &'static str| if filter { f } else { a };
    let mut files: Vec<(&str, &str, bool)> = match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                pick(
                    include_str!("../../templates/rust/filter.rs"),
                    include_str!("../../templates/rust/action.rs"),
                ),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/rust/build.sh"),
                true,
            ),
            ("wasmtrigger-guest/Cargo.toml", &sdk_manifest, false),
            ("wasmtrigger-guest/src/lib.rs", SDK_LIB, false),
            ("wasmtrigger-guest/wit/plugin.wit", WIT, false),
        ],
        Lang::Python => vec![
            (
                "app.py",
                pick(
                    include_str!("../../templates/python/filter.py"),
                    include_str!("../../templates/python/action.py"),
                ),
                false,
            ),
            (
                "requirements.txt",
                include_str!("../../templates/python/requirements.txt"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/python/build.sh"),
                true,
            ),
        ],
        Lang::Js => vec![
            (
                "app.js",
                pick(
                    include_str!("../../templates/js/filter.js"),
                    include_str!("../../templates/js/action.js"),
                ),
                false,
            ),
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/js/build.sh"),
                true,
            ),
        ],
        Lang::C => vec![
            (
                "app.c",
                pick(
                    include_str!("../../templates/c/filter.c"),
                    include_str!("../../templates/c/action.c"),
                ),
                false,
            ),
            ("build.sh", include_str!("../../templates/c/build.sh"), true),
        ],
        Lang::Cpp => vec![
            (
                "app.cpp",
                pick(
                    include_str!("../../templates/cpp/filter.cpp"),
                    include_str!("../../templates/cpp/action.cpp"),
                ),
                false,
            ),
            ("build.sh", include_str!("../../templates/c/build.sh"), true),
        ],
    };
    // What a client posts, and the event the webhook makes of it: the sample
    // event, the suggested trigger and the code agree.
    let body: serde_json::Value = if filter {
        serde_json::from_str(SAMPLE_DEPLOYMENT).unwrap_or_default()
    } else {
        serde_json::json!({ "hello": "world" })
    };
    let event = serde_json::json!({
        "id": "sample-1",
        "trigger": name,
        "source": "webhook",
        "kind": "post",
        "time": "2026-11-22T10:00:00.000Z",
        "data": { "body": body, "headers": {}, "contentType": "application/json" },
    });
    let event_text = serde_json::to_string_pretty(&event).unwrap_or_default() + "\n";
    // A module test on the same event: what `wasmtrigger test` runs.
    let module = format!("{name}.wasm");
    let fixture = if filter {
        serde_json::json!({
            "name": "the sample event passes",
            "filter": { "module": module },
            "event": event,
            "expect": { "verdict": true, "calls": [] },
        })
    } else {
        serde_json::json!({
            "name": "counts its runs (kv answers 41) and returns them",
            "action": { "module": module, "params": { "greeting": "hello" } },
            "event": event,
            "calls": [ { "call": "kv.increment", "args": "\"runs\" by 1", "answer": 41 } ],
            "expect": {
                "output": { "runs": 41, "kind": "post", "params": { "greeting": "hello" } },
                "calls": [ "kv.increment \"runs\" by 1" ],
            },
        })
    };
    let fixture_text = serde_json::to_string_pretty(&fixture).unwrap_or_default() + "\n";
    let body_text = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
    let triggers_text = if filter {
        format!(
            "# The filter decides; log-event.wasm (one of wasmtrigger's example modules:\n# copy it here) prints what passed.\ntriggers:\n  - name: {name}\n    source: {{ type: webhook, auth: none }}\n    filter: {{ module: {name}.wasm }}\n    action: {{ module: log-event.wasm }}\n"
        )
    } else {
        format!(
            "triggers:\n  - name: {name}\n    source: {{ type: webhook, auth: none }}\n    action:\n      module: {name}.wasm\n      params: {{ greeting: hello }}\n"
        )
    };
    if lang != Lang::Rust {
        files.push(("wit/plugin.wit", WIT, false));
    }
    files.push(("event.json", &event_text, false));
    files.push(("sample.fixture.json", &fixture_text, false));
    files.push(("body.json", &body_text, false));
    files.push(("triggers.yaml", &triggers_text, false));
    files.push(("README.md", README, false));
    let (lang_name, build) = match lang {
        Lang::Rust => (
            "Rust",
            "```sh\nrustup target add wasm32-wasip2   # once\n./build.sh\n```",
        ),
        Lang::Python => (
            "Python",
            "```sh\npython3 -m venv .venv && .venv/bin/pip install -r requirements.txt   # once\nPATH=.venv/bin:$PATH ./build.sh\n```",
        ),
        Lang::Js => ("JavaScript", "```sh\nnpm install   # once\n./build.sh\n```"),
        Lang::C | Lang::Cpp => (if lang == Lang::C { "C" } else { "C++" }, ""),
    };
    let c_build = format!(
        "```sh\nsudo apt install {}   # once (Debian)\ncargo install --locked wit-bindgen-cli@{WIT_BINDGEN_TOOL} wasm-tools@{WASM_TOOLS_TOOL}   # once\n./build.sh\n```",
        if lang == Lang::Cpp {
            format!("{C_DEBIAN} {CPP_DEBIAN}")
        } else {
            C_DEBIAN.to_string()
        }
    );
    let build = if build.is_empty() {
        c_build.as_str()
    } else {
        build
    };
    let cpp = lang == Lang::Cpp;
    let compile = if cpp {
        r#""$cxx" "${flags[@]}" -std=c++17 -fno-exceptions -DJSON_NOEXCEPTION app.cpp "${link[@]}""#
    } else {
        r#""$cc" "${flags[@]}" -std=c11 app.c "${link[@]}""#
    };
    let debian = if cpp {
        format!("{C_DEBIAN} {CPP_DEBIAN}")
    } else {
        C_DEBIAN.to_string()
    };
    let vars = [
        ("{{name}}", name.to_string()),
        ("{{crate}}", name.replace('-', "_")),
        ("{{type}}", type_name(name)),
        (
            "{{wit}}",
            if lang == Lang::Rust {
                "wasmtrigger-guest/wit/plugin.wit"
            } else {
                "wit/plugin.wit"
            }
            .to_string(),
        ),
        ("{{world}}", world.name().to_string()),
        ("{{lang_name}}", lang_name.to_string()),
        ("{{build}}", build.to_string()),
        (
            "{{what}}",
            match (filter, lang) {
                (true, Lang::C) => "passes every event but deletions",
                (true, _) => "passes objects that have a name",
                (false, _) => "counts its runs and returns them",
            }
            .to_string(),
        ),
        (
            "{{expect}}",
            match (filter, lang) {
                (true, Lang::C) => ": `true`, since the sample event is a `post`",
                (true, _) => ": `true`, since the sample Deployment has a name",
                (false, _) => ": `{\"runs\":1,\"kind\":\"post\",...}`",
            }
            .to_string(),
        ),
        (
            "{{extra_step}}",
            pick(
                "cp PATH/TO/log-event.wasm .    # an action for the filter to pass events to\n",
                "",
            )
            .to_string(),
        ),
        (
            "{{params_flag}}",
            if filter {
                String::new()
            } else {
                " --params '{\"greeting\":\"hello\"}'".to_string()
            },
        ),
        ("{{py_tool}}", PYTHON_TOOL.to_string()),
        ("{{js_tool}}", JS_TOOL.to_string()),
        ("{{wit_bindgen}}", WIT_BINDGEN_TOOL.to_string()),
        ("{{wasm_tools}}", WASM_TOOLS_TOOL.to_string()),
        ("{{compile}}", compile.to_string()),
        ("{{debian}}", debian),
        (
            "{{cpp_needs}}",
            if cpp {
                ", libc++ for wasm32 and nlohmann/json"
            } else {
                ""
            }
            .to_string(),
        ),
        ("{{ext}}", if cpp { "cpp" } else { "c" }.to_string()),
    ];
    let mut written = Vec::new();
    for (relative, template, executable) in files {
        let mut text = template.to_string();
        for (key, value) in &vars {
            text = text.replace(key, value);
        }
        let path = dir.join(relative);
        let io = |e| ScaffoldError::Io(path.clone(), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
        written.push(path);
    }
    if matches!(lang, Lang::C | Lang::Cpp) {
        let path = dir.join(WASI_ADAPTER.0);
        std::fs::write(&path, WASI_ADAPTER.1).map_err(|e| ScaffoldError::Io(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_pins_match_the_projects_guest_tools() {
        let py = include_str!("../../../guest-tools/python/requirements.txt");
        assert!(
            py.contains(&format!("componentize-py=={PYTHON_TOOL}")),
            "{py}"
        );
        let js = include_str!("../../../guest-tools/js/package.json");
        assert!(
            js.contains(&format!(
                "\"@bytecodealliance/componentize-js\": \"{JS_TOOL}\""
            )),
            "{js}"
        );
        let c = include_str!("../../../guest-tools/c/versions");
        assert!(
            c.contains(&format!("crate wit-bindgen-cli {WIT_BINDGEN_TOOL}")),
            "{c}"
        );
        assert!(
            c.contains(&format!("crate wasm-tools {WASM_TOOLS_TOOL}")),
            "{c}"
        );
        for package in C_DEBIAN.split(' ').chain(CPP_DEBIAN.split(' ')) {
            assert!(c.contains(package), "{package} is not in {c}");
        }
    }

    #[test]
    fn the_rust_project_carries_a_standalone_copy_of_the_sdk() {
        let manifest = sdk_manifest();
        assert!(!manifest.contains(".workspace"), "{manifest}");
        assert!(
            manifest.contains("name = \"wasmtrigger-guest\""),
            "{manifest}"
        );
        assert_eq!(type_name("my-filter-2"), "MyFilter2");
        let dir = std::env::temp_dir().join(format!("wt-new-{}", uuid::Uuid::now_v7()));
        scaffold(World::Filter, "only-watched", Lang::Rust, &dir).unwrap();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("impl Filter for OnlyWatched"), "{lib}");
        assert!(dir.join("wasmtrigger-guest/wit/plugin.wit").is_file());
        assert!(!dir.join("wit").exists(), "one copy of the contract");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn writes_a_project_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("wt-new-{}", uuid::Uuid::now_v7()));
        let files = scaffold(World::Action, "my-action", Lang::Python, &dir).unwrap();
        assert!(files.iter().any(|f| f.ends_with("app.py")));
        let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
        assert!(
            build.contains("-w action componentize app -o my-action.wasm"),
            "{build}"
        );
        assert!(
            !std::fs::read_to_string(dir.join("README.md"))
                .unwrap()
                .contains("{{")
        );
        assert!(matches!(
            scaffold(World::Action, "my-action", Lang::Python, &dir),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            scaffold(World::Filter, "Bad_Name", Lang::Rust, &dir),
            Err(ScaffoldError::Name(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
