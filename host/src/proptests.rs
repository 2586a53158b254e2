//! Property tests over the parsers and checkers that take untrusted text:
//! config documents and whole configs, cron expressions, CEL expressions and
//! their evaluation, HTTP grant patterns, Kubernetes names and selectors, and
//! the redactor. Inputs come from a seeded generator: structured ones from
//! small grammars, plus byte-level mutations of valid examples.
//!
//! Each property runs [`cases`] times: a bounded smoke run in the suite, and
//! a longer run by hand:
//!
//! ```sh
//! WASMTRIGGER_FUZZ_CASES=200000 cargo test -p wasmtrigger --lib proptests -- --nocapture
//! ```
//!
//! `WASMTRIGGER_FUZZ_SEED` replays a run; every property prints its seed and
//! case count, and a failure names the input that broke it.

use std::time::{Duration, Instant};

/// Cases per property (`WASMTRIGGER_FUZZ_CASES`, default 2000).
fn cases() -> usize {
    std::env::var("WASMTRIGGER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// A seeded generator.
struct Gen {
    rng: fastrand::Rng,
}

impl Gen {
    fn new(property: &str) -> Self {
        let seed = std::env::var("WASMTRIGGER_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        eprintln!("property {property}: seed {seed}, {} cases", cases());
        Gen {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.rng.usize(..options.len())]
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.rng.u8(..100) < percent
    }

    /// A short string of characters that tend to matter to parsers.
    fn nasty(&mut self, max: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", "9", "-", "_", ".", "/", "..", "*", "?", "#", "%", "%2e", "\\", "\"",
            "'", " ", "\t", "\n", "\r\n", "\0", "é", "😀", "\u{202e}", ":", ",", "=", "!", "(",
            ")", "[", "]", "{", "}", "&", "|", "$", "@", "~", "`", "<", ">", "^", "+",
        ];
        let n = self.rng.usize(..=max);
        (0..n).map(|_| self.pick(PIECES)).collect()
    }

    /// `text` with a few bytes changed, dropped, duplicated or inserted
    /// (kept valid UTF-8, as config files are read as text).
    fn mutate(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..self.rng.usize(1..=8) {
            if chars.is_empty() {
                chars.push('x');
            }
            let i = self.rng.usize(..chars.len());
            match self.rng.u8(..5) {
                0 => {
                    chars.remove(i);
                }
                1 => chars.insert(i, self.rng.char('\u{0}'..='\u{7f}')),
                2 => {
                    let end = (i + self.rng.usize(1..20)).min(chars.len());
                    let copy: Vec<char> = chars[i..end].to_vec();
                    chars.splice(i..i, copy);
                }
                3 => {
                    chars[i] = self
                        .pick(&["[", "{", ":", "-", "&a", "*a", "\"", "\n", " "])
                        .chars()
                        .next()
                        .unwrap_or(' ')
                }
                _ => chars.insert(i, self.rng.char(..)),
            }
        }
        chars.into_iter().collect()
    }
}

/// A config document from a small grammar of what triggers look like.
fn config_text(g: &mut Gen) -> String {
    let mut text = String::new();
    if g.chance(40) {
        text.push_str("engine:\n");
        for _ in 0..g.rng.usize(0..4) {
            let key = g.pick(&[
                "workers",
                "queueSize",
                "timeout",
                "memory",
                "stdioLimit",
                "server",
                "retry",
                "journal",
                "kv",
                "triggerObjects",
                "bogus",
            ]);
            let value = value_text(g, 2);
            text.push_str(&format!("  {key}: {value}\n"));
        }
    }
    text.push_str("triggers:\n");
    for i in 0..g.rng.usize(0..4) {
        let name = if g.chance(80) {
            format!("t{i}")
        } else {
            g.nasty(6)
        };
        let source = match g.rng.u8(..6) {
            0 => format!("{{ type: schedule, cron: {} }}", quoted(&cron_text(g))),
            1 => format!(
                "{{ type: schedule, every: {} }}",
                g.pick(&["1s", "0s", "5m", "-1s", "1y", "abc", "999999999h"])
            ),
            2 => format!(
                "{{ type: webhook, auth: {} }}",
                g.pick(&[
                    "none",
                    "{bearer: {secret: k}}",
                    "{hmac: {secret: '../x'}}",
                    "{}",
                    "[]"
                ])
            ),
            3 => format!(
                "{{ type: trigger, of: {} }}",
                quoted(&format!("t{}", g.rng.usize(0..4)))
            ),
            4 => format!(
                "{{ type: kube-watch, apiVersion: {}, kind: {}, namespace: {} }}",
                g.pick(&["v1", "apps/v1", "", "v1/../x"]),
                g.pick(&["ConfigMap", "pod", ""]),
                quoted(&g.nasty(8))
            ),
            _ => value_text(g, 3),
        };
        let filter = if g.chance(30) {
            format!("\n    filter: {{ cel: {} }}", quoted(&cel_text(g, 3)))
        } else {
            String::new()
        };
        let grants = if g.chance(40) {
            format!(
                ", grants: {{ http: [{}], secrets: [{}] }}",
                quoted(&grant_text(g)),
                quoted(&g.nasty(6))
            )
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  - name: {}\n    source: {source}{filter}\n    action: {{ module: {}, params: {}{grants} }}\n",
            quoted(&name),
            quoted(g.pick(&["log-event.wasm", "../x.wasm", "/etc/passwd", "", "a/b.wasm"])),
            value_text(g, 3)
        ));
    }
    text
}

/// A YAML value, a few levels deep.
fn value_text(g: &mut Gen, depth: usize) -> String {
    match g.rng.u8(..if depth == 0 { 4 } else { 6 }) {
        0 => g.rng.i64(..).to_string(),
        1 => g
            .pick(&["true", "null", "1.5e309", "-0", "0x1F", "~", "1Mi", "10s"])
            .to_string(),
        2 | 3 => quoted(&g.nasty(10)),
        4 => {
            let items: Vec<String> = (0..g.rng.usize(0..4))
                .map(|_| value_text(g, depth - 1))
                .collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let items: Vec<String> = (0..g.rng.usize(0..4))
                .map(|i| format!("k{i}: {}", value_text(g, depth - 1)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// A JSON-quoted string (valid in YAML flow context).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn cron_text(g: &mut Gen) -> String {
    // Mostly well-formed fields, so that parsing succeeds often enough for
    // the "fires in the future" half of the property to be exercised.
    let sane = g.chance(80);
    let field = |g: &mut Gen| -> String {
        match g.rng.u8(..if sane { 5 } else { 8 }) {
            0 => "*".into(),
            1 => format!("*/{}", g.rng.u32(1..20)),
            2 => format!("{}-{}", g.rng.u32(0..5), g.rng.u32(5..12)),
            3 => format!("{},{}", g.rng.u32(1..12), g.rng.u32(1..12)),
            4 => g.rng.u32(1..12).to_string(),
            5 => g
                .pick(&["MON-FRI", "JAN", "L", "?", "#", "1#2", "W"])
                .into(),
            6 => g.nasty(3),
            _ => g.rng.i64(..).to_string(),
        }
    };
    let n = if sane {
        g.rng.usize(5..=6)
    } else {
        g.rng.usize(0..9)
    };
    (0..n).map(|_| field(g)).collect::<Vec<_>>().join(" ")
}

fn cel_text(g: &mut Gen, depth: usize) -> String {
    if depth == 0 {
        return g
            .pick(&[
                "event.data.x",
                "event.kind",
                "1",
                "-3",
                "2.5",
                "'s'",
                "true",
                "null",
                "[]",
                "{}",
                "event.data",
                "x",
                "event.data.items",
                "event.data.o.a",
                "event.data.o",
                "event.data.o.c.d",
                "event.data.missing.f",
                "event.data.s",
            ])
            .into();
    }
    let a = cel_text(g, depth - 1);
    let b = cel_text(g, depth - 1);
    match g.rng.u8(..12) {
        0 => format!("{a} + {b}"),
        1 => format!("{a} == {b}"),
        2 => format!("({a}) && ({b})"),
        3 => format!("!{a}"),
        4 => format!("{a} ? {b} : {a}"),
        5 => format!("{a}.all(x, {b})"),
        6 => format!("{a}.exists(y, y == {b})"),
        7 => format!("size({a}) > {b}"),
        8 => format!("{a}[{b}]"),
        9 => format!("has({a}.f)"),
        10 => format!("{a} / {b}"),
        _ => g.nasty(6),
    }
}

fn grant_text(g: &mut Gen) -> String {
    let scheme = g.pick(&["", "http://", "https://", "ftp://", "HTTP://", "://"]);
    let host = g.pick(&[
        "example.com",
        "*.example.com",
        "*",
        "127.0.0.1",
        "[::1]",
        "[::zz]",
        "a..b",
        "",
        "ex ample.com",
        "user@h.com",
    ]);
    let port = g.pick(&["", ":80", ":0", ":65536", ":x", ":8080"]);
    let path = g.pick(&["", "/", "/api", "/a?b", "/%2e%2e", "//x"]);
    let mut text = format!("{scheme}{host}{port}{path}");
    if g.chance(30) {
        text = g.mutate(&text);
    }
    text
}

#[test]
fn config_documents_and_configs_never_panic() {
    let mut g = Gen::new("config");
    let dir = tempfile::tempdir().unwrap();
    let examples: Vec<String> = [
        "quickstart.yaml",
        "aggregate.yaml",
        "notify.yaml",
        "bump-revision.yaml",
    ]
    .iter()
    .filter_map(|f| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/configs")
                .join(f),
        )
        .ok()
    })
    .collect();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..cases() {
        let text = match (i % 3, examples.is_empty()) {
            (0, false) => {
                let base = examples[g.rng.usize(..examples.len())].clone();
                g.mutate(&base)
            }
            (1, _) => {
                let text = config_text(&mut g);
                g.mutate(&text)
            }
            _ => config_text(&mut g),
        };
        let _ = super::config::document::parse(&text);
        let path = dir
            .path()
            .join(if g.chance(20) { "c.json" } else { "c.yaml" });
        std::fs::write(&path, &text).unwrap();
        match super::config::load_declarations(&path, &Default::default()) {
            Ok(_) => ok += 1,
            Err(errors) => {
                refused += 1;
                for e in &errors.0 {
                    assert!(!e.message.is_empty(), "an empty error for {text:?}");
                    assert_eq!(e.file, path, "{e}");
                }
            }
        }
    }
    eprintln!("config: {ok} loaded, {refused} refused, 0 panics");
}

#[test]
fn cron_expressions_never_panic_and_fire_in_the_future() {
    let mut g = Gen::new("cron");
    let now = chrono::Utc::now();
    let mut parsed = 0;
    for _ in 0..cases() {
        let text = cron_text(&mut g);
        if let Ok(schedule) = super::config::cron::CronSchedule::parse(&text) {
            parsed += 1;
            if let Some(next) = schedule.next_after(&now) {
                assert!(next > now, "{text}: {next} is not after {now}");
            }
        }
    }
    eprintln!("cron: {parsed} parsed of {}, 0 panics", cases());
}

#[test]
fn cel_expressions_compile_and_evaluate_without_panics_within_deadlines() {
    let mut g = Gen::new("cel");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut compiled, mut evaluated) = (0, 0);
    for _ in 0..cases() {
        let depth = g.rng.usize(0..5);
        let mut text = cel_text(&mut g, depth);
        if g.chance(20) {
            text = g.mutate(&text);
        }
        let Ok(filter) = super::cel::CelFilter::compile(&text) else {
            continue;
        };
        compiled += 1;
        let data = serde_json::json!({
            "x": g.rng.i64(..),
            "items": (0..g.rng.usize(0..50)).collect::<Vec<usize>>(),
            "s": g.nasty(5),
            "o": {"a": g.rng.i64(..), "b": [1, "two"], "c": {"d": g.nasty(3)}},
        });
        let event = super::event::Event::new("t", "s", "k", &data);
        let started = Instant::now();
        let budget = Duration::from_millis(200);
        let pruned = rt.block_on(filter.evaluate_until(&event, started + budget));
        evaluated += 1;
        assert!(
            started.elapsed() < budget + Duration::from_secs(5),
            "{text} overran its deadline"
        );
        // Parsing only what the expression reads gives the same answer.
        let full = rt.block_on(
            filter
                .clone()
                .reading_everything()
                .evaluate_until(&event, Instant::now() + budget),
        );
        let timed_out = |r: &Result<bool, super::cel::CelError>| {
            matches!(r, Err(super::cel::CelError::Timeout(_)))
        };
        // (An error's text may list a map in either order: compare outcomes.)
        if !timed_out(&pruned) && !timed_out(&full) {
            assert_eq!(pruned.ok(), full.ok(), "{text} over {data}");
        }
    }
    eprintln!("cel: {compiled} compiled, {evaluated} evaluated, 0 panics");
}

#[test]
fn grants_names_and_selectors_never_panic_and_accept_only_safe_text() {
    use super::config::grants::{
        HttpGrant, check_label_selector, check_namespace, check_object_name,
    };
    let mut g = Gen::new("grants");
    let mut accepted = 0;
    for _ in 0..cases() {
        let text = grant_text(&mut g);
        if let Ok(grant) = HttpGrant::parse(&text) {
            accepted += 1;
            assert!(grant.within(&grant), "{text} is not within itself");
            for url in [
                "http://example.com/api/x",
                "https://a.example.com:443/",
                "http://127.0.0.1/",
            ] {
                let _ = grant.allows(&url::Url::parse(url).unwrap());
            }
        }
        let name = g.nasty(12);
        if check_object_name(&name).is_ok() {
            for bad in ['/', '?', '#', '%', ' ', '\n', '\0'] {
                assert!(!name.contains(bad), "{name:?} accepted");
            }
            assert!(!name.contains(".."), "{name:?} accepted");
        }
        if check_namespace(&name).is_ok() {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name:?}"
            );
        }
        let selector = format!(
            "{}{}{}",
            g.nasty(4),
            g.pick(&["=", "!=", " in (", " notin (", ""]),
            g.nasty(4)
        );
        if check_label_selector(&selector).is_ok() {
            for bad in ['&', '?', '#', '/', '%'] {
                assert!(
                    !selector.contains(bad)
                        || selector
                            .split_once('/')
                            .is_some_and(|(p, _)| !p.contains(bad)),
                    "{selector:?} accepted"
                );
            }
        }
    }
    eprintln!("grants: {accepted} grant patterns accepted, names and selectors checked, 0 panics");
}

#[test]
fn redaction_leaves_no_form_of_a_registered_value() {
    use super::redact::{MIN_SECRET_CHARS, SecretSet};
    let mut g = Gen::new("redact");
    for i in 0..cases() {
        // A set of its own per case: the process-wide one is left alone.
        let set = SecretSet::default();
        let mut secret = format!("s{i}-{}", g.nasty(20));
        if g.chance(30) {
            secret.push('\n');
        }
        if g.chance(20) {
            secret =
                format!("-----BEGIN-----\n{secret}-line-one\n{secret}-line-two\n-----END-----\n");
        }
        if secret.trim().chars().count() < MIN_SECRET_CHARS {
            continue;
        }
        set.register(&secret);
        let json = serde_json::to_string(&secret).unwrap();
        let debug = format!("{secret:?}");
        let form = g.pick(&["raw", "json", "debug", "trim"]);
        let shown = match form {
            "json" => json.clone(),
            "debug" => debug.clone(),
            "trim" => secret.trim().to_string(),
            _ => secret.clone(),
        };
        let text = format!("{}{shown}{}", g.nasty(10), g.nasty(10));
        let out = set.redact_str(&text);
        for needle in [
            secret.trim(),
            json.trim_matches('"'),
            debug.trim_matches('"'),
        ] {
            if needle.chars().count() >= MIN_SECRET_CHARS {
                assert!(!out.contains(needle), "{needle:?} survived in {out:?}");
            }
        }
        // The same text written in random pieces, each cut where safe.
        let bytes = text.as_bytes();
        let (mut written, mut held) = (Vec::new(), Vec::new());
        for chunk in bytes.chunks(g.rng.usize(1..=16)) {
            held.extend_from_slice(chunk);
            let rest = held.split_off(set.safe_cut(&held));
            written.extend_from_slice(&set.redact_bytes(&held));
            held = rest;
        }
        written.extend_from_slice(&set.redact_bytes(&held));
        let written = String::from_utf8_lossy(&written);
        if secret.trim().chars().count() >= MIN_SECRET_CHARS && form != "json" && form != "debug" {
            assert!(
                !written.contains(secret.trim()),
                "{secret:?} survived streaming in {written:?}"
            );
        }
    }
    eprintln!("redact: {} values registered and hunted, 0 panics", cases());
}
