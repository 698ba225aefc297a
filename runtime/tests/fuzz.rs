//! Property-based fuzzing of everything that walks user input at save time: definition parsing
//! (JSON and YAML), validation, Rhai compilation and `{{ … }}` templates, durations. Each target
//! asserts that nothing panics or overflows the stack and that what is accepted is within the
//! documented limits.
//!
//! CI runs the default budget (`PROPTEST_CASES`, 256 cases a target); a longer run:
//! `PROPTEST_CASES=20000 cargo test --release -p switchboard-runtime --test fuzz`.

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_runtime::action::ActionRegistry;
use switchboard_runtime::definition::{self, Format, MAX_NESTING, MAX_STEPS, MAX_WAIT};
use switchboard_runtime::expr::{ExprEngine, Template};

fn engine() -> &'static ExprEngine {
    static ENGINE: std::sync::OnceLock<ExprEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(ExprEngine::new)
}

/// Any JSON value, nested up to `depth` levels.
fn any_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), any::<i64>().prop_map(|n| json!(n)), ".{0,12}".prop_map(Value::String),];
    leaf.prop_recursive(depth, 256, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Words a definition is made of, so that random documents reach deep into validation.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("s0".to_string()),
        Just("s1".to_string()),
        Just("s2".to_string()),
        Just("end".to_string()),
        Just("2h".to_string()),
        Just("9223372036854775s".to_string()),
        Just("106751991167d".to_string()),
        Just("{{ event.lead.phone }}".to_string()),
        Just("event.x == 1".to_string()),
        Just("2030-01-01T00:00:00Z".to_string()),
        "[ -~]{0,16}",
    ]
}

/// A step of any kind with plausible and implausible fields.
fn step(i: usize) -> impl Strategy<Value = Value> {
    let id = format!("s{i}");
    (0..8u8, word(), word(), word(), any_json(3)).prop_map(move |(kind, a, b, c, extra)| match kind {
        0 => json!({ "id": id, "delay": a }),
        1 => json!({ "id": id, "delay": { "until": a } }),
        2 => json!({ "id": id, "branch": [{ "when": b, "goto": a }, { "else": c }] }),
        3 => json!({ "id": id, "wait_for": { "event": a, "match": b, "timeout": c, "on_timeout": "s0" } }),
        4 => json!({ "id": id, "set": { "x": a, "y": b } }),
        5 => json!({ "id": id, "action": a, "input": extra, "retry": { "max_attempts": 3, "backoff": b }, "on_error": c }),
        6 => json!({ "id": id, "end": {} }),
        _ => json!({ "id": id, a: extra }),
    })
}

fn definition() -> impl Strategy<Value = Value> {
    (1..12usize, any_json(2), word()).prop_flat_map(|(n, params, trigger)| {
        let steps: Vec<_> = (0..n).map(step).collect();
        (steps, Just(params), Just(trigger))
            .prop_map(|(steps, params, trigger)| json!({ "name": "fuzz", "trigger": { "event": trigger, "when": trigger }, "params": params, "steps": steps }))
    })
}

/// The depth of a value (a scalar is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

proptest! {
    /// Random documents: validation answers, and what it accepts is within the limits.
    #[test]
    fn validation_never_panics(doc in definition()) {
        let registry = ActionRegistry::new();
        if let Ok(w) = definition::validate(&doc, &registry, engine()) {
            prop_assert!(w.steps.len() <= MAX_STEPS);
            prop_assert!(depth(&doc) <= MAX_NESTING);
        }
    }

    /// Arbitrary JSON as a whole document.
    #[test]
    fn any_json_document_is_answered(doc in any_json(6)) {
        let _ = definition::validate(&doc, &ActionRegistry::new(), engine());
    }

    /// Arbitrary bytes as JSON and YAML bodies: an error or a value, never a panic.
    #[test]
    fn parsing_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = definition::parse(&bytes, Format::Json);
        let _ = definition::parse(&bytes, Format::Yaml);
    }

    /// Arbitrary text as Rhai scripts, expressions and templates.
    #[test]
    fn scripts_compile_or_fail_cleanly(source in "[ -~]{0,64}") {
        let _ = engine().compile_script(&source);
        let _ = engine().compile_expression(&source);
        let _ = Template::compile(engine(), &source);
    }

    /// Scripts built from operators and brackets, where parsers recurse.
    #[test]
    fn nested_expressions_compile_or_fail_cleanly(parts in prop::collection::vec(prop_oneof![
        Just("("), Just(")"), Just("["), Just("]"), Just("{"), Just("}"), Just("#{"), Just("!"), Just("-"),
        Just("+"), Just("event.a"), Just("1"), Just(","), Just("if"), Just("else"), Just("\""), Just("."),
    ], 0..400)) {
        let source: String = parts.concat();
        let _ = engine().compile_script(&source);
        let _ = engine().compile_expression(&source);
    }

    /// Durations: accepted ones are at most ten years.
    #[test]
    fn accepted_durations_are_bounded(n in any::<u64>(), unit in prop_oneof![Just("s"), Just("m"), Just("h"), Just("d"), Just("w"), Just("y"), Just("ms")]) {
        if let Ok(d) = definition::parse_duration(&format!("{n}{unit}")) {
            prop_assert!(d <= MAX_WAIT);
        }
    }
}

/// Inputs far past the limits, built by hand: each is answered, none overflows the stack.
#[test]
fn deep_json_and_yaml_are_refused() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(definition::parse(deep.as_bytes(), Format::Json).is_err());
    assert!(definition::parse(deep.as_bytes(), Format::Yaml).is_err());
}

#[test]
fn deep_rhai_is_refused() {
    let expr = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(engine().compile_expression(&expr).is_err());
}

#[test]
fn extreme_inputs_are_answered() {
    // 200,000 steps in a goto cycle: refused for their number, before any walk.
    let steps: Vec<Value> = (0..200_000).map(|i| json!({ "id": format!("s{i}"), "branch": [{ "else": format!("s{}", (i + 1) % 200_000) }] })).collect();
    let doc = json!({ "name": "huge", "trigger": { "manual": {} }, "steps": steps });
    let problems = definition::validate(&doc, &ActionRegistry::new(), engine()).unwrap_err();
    assert_eq!(problems[0].path, "steps");
    // Nesting built in memory past what a parser would allow.
    // (Built by moving values, not with `json!`, whose interpolation re-serializes recursively.)
    let mut value = json!(1);
    for _ in 0..5_000 {
        value = Value::Array(vec![value]);
    }
    let mut doc = json!({ "name": "deep", "trigger": { "manual": {} }, "params": {}, "steps": [{ "id": "e", "end": {} }] });
    doc["params"].as_object_mut().unwrap().insert("p".into(), value);
    let problems = definition::validate(&doc, &ActionRegistry::new(), engine()).unwrap_err();
    assert!(problems[0].message.contains("nested"), "{problems:?}");
    // serde_json's own drop of 5,000 levels is recursive but shallow per level; let it go on a
    // thread with room rather than measure serde_json here.
    std::thread::Builder::new().stack_size(64 << 20).spawn(move || drop(doc)).unwrap().join().unwrap();
}
