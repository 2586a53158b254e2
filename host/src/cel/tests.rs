//! Tests of CEL filters and keys: verdicts, bounds, and that hostile text is an error.
use super::*;
use crate::event::Event;

fn deployment(ready: i64, replicas: i64) -> Event {
    let data = serde_json::json!({
        "metadata": {"name": "watched-web"},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready}
    });
    Event::new("t", "schedule", "update", &data)
}

#[test]
fn predicate_over_event_data() {
    let f =
        CelFilter::compile("event.data.status.readyReplicas == event.data.spec.replicas").unwrap();
    assert!(f.evaluate(&deployment(3, 3)).unwrap());
    assert!(!f.evaluate(&deployment(1, 3)).unwrap());
}

#[test]
fn string_functions_and_event_fields() {
    let f = CelFilter::compile(
        r#"event.data.metadata.name.startsWith("watched-") && event.kind == "update""#,
    )
    .unwrap();
    assert!(f.evaluate(&deployment(0, 1)).unwrap());
}

#[test]
fn json_integers_are_cel_ints() {
    let f =
        CelFilter::compile("event.data.spec.replicas % 2 == 1 && event.data.spec.replicas > -1")
            .unwrap();
    assert!(f.evaluate(&deployment(0, 3)).unwrap());
    let e = Event::new(
        "t",
        "s",
        "k",
        &serde_json::json!({"ratio": 0.5, "list": [1, 2]}),
    );
    let f = CelFilter::compile(
        "event.data.ratio < 1.0 && size(event.data.list) == 2 && 2 in event.data.list",
    )
    .unwrap();
    assert!(f.evaluate(&e).unwrap());
}

#[test]
fn non_boolean_result_is_an_error() {
    let f = CelFilter::compile("event.data.spec.replicas + 1").unwrap();
    assert!(
        f.evaluate(&deployment(0, 1))
            .unwrap_err()
            .contains("expected a bool")
    );
}

#[test]
fn missing_field_is_an_error_and_has_guards_it() {
    let f = CelFilter::compile("event.data.status.conditions.size() > 0").unwrap();
    assert!(f.evaluate(&deployment(0, 1)).is_err());
    let f = CelFilter::compile("has(event.data.status.conditions)").unwrap();
    assert!(!f.evaluate(&deployment(0, 1)).unwrap());
}

#[test]
fn syntax_errors_are_reported() {
    let e = CelFilter::compile("event.data.(").unwrap_err();
    assert!(e.contains("invalid CEL expression"), "{e}");
}

#[test]
fn hostile_texts_are_located_errors_not_crashes() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{}true{}", "(".repeat(1000), ")".repeat(1000)),
            "nest more than",
        ),
        (
            format!("{}true{}", "[".repeat(100), "]".repeat(100)),
            "nest more than",
        ),
        (format!("event.data.x{} > 0", " + 1".repeat(3000)), "bytes"),
        (
            format!("event.data.x{} > 0", " + 1".repeat(500)),
            "operations deep",
        ),
        (format!("event{}", ".a".repeat(400)), "operations deep"),
        (format!("[{}1]", "1,".repeat(4200)), "bytes"),
        (format!("[{}1]", "1,".repeat(4050)), "parts"),
        ("x".repeat(MAX_EXPRESSION_BYTES + 1), "bytes"),
        ("true ? 1 : ".repeat(30) + "2", "conditionals"),
        ("my.Message{a: 1}".into(), "struct"),
        ("\"unterminated".into(), "invalid CEL"),
    ];
    for (text, why) in cases {
        let e = CelFilter::compile(&text).unwrap_err();
        assert!(
            e.contains(why) && e.contains("invalid CEL expression"),
            "{why}: {e}"
        );
    }
    // Brackets inside strings do not count.
    assert!(CelFilter::compile(&format!("event.kind == '{}'", "(".repeat(100))).is_ok());
}

#[tokio::test]
async fn a_quadratic_expression_times_out() {
    let items: Vec<i64> = (0..3000).collect();
    let e = Event::new("t", "s", "k", &serde_json::json!({ "items": items }));
    let f =
        CelFilter::compile("event.data.items.all(a, event.data.items.exists(b, b == a))").unwrap();
    let started = Instant::now();
    let verdict = f
        .evaluate_until(&e, started + std::time::Duration::from_millis(200))
        .await;
    assert!(matches!(verdict, Err(CelError::Timeout(_))), "{verdict:?}");
    // The same expression with room to finish gives its answer.
    let small = Event::new("t", "s", "k", &serde_json::json!({ "items": [1, 2, 3] }));
    let verdict = f
        .evaluate_until(&small, Instant::now() + std::time::Duration::from_secs(30))
        .await;
    assert_eq!(verdict, Ok(true));
}

#[test]
fn small_loop_free_trees_run_inline_within_a_small_stack() {
    // The deepest tree still inline: INLINE_DEPTH - 3 additions deep, over
    // selections two deep.
    let deepest = ["event.data.x"; INLINE_DEPTH - 2].join(" + ");
    let f = CelFilter::compile_key(&deepest).unwrap();
    assert!(f.inline);
    assert!(
        !CelFilter::compile_key(&format!("{deepest} + 1"))
            .unwrap()
            .inline
    );
    assert!(
        !CelFilter::compile("event.data.xs.all(x, x > 0)")
            .unwrap()
            .inline
    );
    let e = Event::new(
        "t",
        "s",
        "k",
        &serde_json::json!({"x": 1, "pad": "y".repeat(5000)}),
    );
    // Far less stack than a tokio worker's 2 MiB, in a debug build too.
    let key = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            futures::executor::block_on(f.key_until(&e, deadline))
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(key, Ok((INLINE_DEPTH - 2).to_string()));
}

#[test]
fn only_spec_changes_pass_a_status_churn_filter() {
    // The README's filter for "fire on spec changes, not status churn".
    let f = CelFilter::compile(
        "event.kind != 'update' || event.data.object.spec != event.data.oldObject.spec",
    )
    .unwrap();
    let update = |spec: i64, ready: i64| {
        Event::new(
            "t",
            "kube-watch",
            "update",
            &serde_json::json!({
                "object": {"spec": {"replicas": spec, "template": {"x": [1, 2]}}, "status": {"ready": ready}},
                "oldObject": {"spec": {"replicas": 3, "template": {"x": [1, 2]}}, "status": {"ready": 0}},
            }),
        )
    };
    assert!(!f.evaluate(&update(3, 2)).unwrap(), "status churn only");
    assert!(f.evaluate(&update(4, 0)).unwrap(), "a spec change");
}

#[test]
fn macros_still_work_and_bad_ranges_are_errors_not_panics() {
    let e = Event::new(
        "t",
        "s",
        "k",
        &serde_json::json!({"xs": [1, 2, 3], "s": "abc"}),
    );
    let f = CelFilter::compile("event.data.xs.all(x, x > 0) && event.data.xs.exists(x, x == 2) && event.data.xs.map(x, x * 2)[2] == 6").unwrap();
    assert!(f.evaluate(&e).unwrap());
    let f = CelFilter::compile("event.data.s.all(c, true)").unwrap();
    let err = f.evaluate(&e).unwrap_err();
    assert!(err.contains("list or a map"), "{err}");
}
