//! Validation: walks the document once, collects every problem with its path, and compiles what
//! is valid. Nothing is saved unless the problem list is empty.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Arm, Delay, ForEach, MAX_NESTING, MAX_STEPS, OnError, Problem, Step, StepKind, Target, Trigger, WebhookSecret, Workflow, parse_duration};
use crate::action::ActionRegistry;
use crate::expr::{CompileError, ExprEngine, Script, Template, ValueTemplate};
use crate::retry::RetryPolicy;

/// The longest timeout an action step may ask for.
const MAX_ACTION_TIMEOUT: Duration = Duration::from_secs(600);

struct Checker<'a> {
    engine: &'a ExprEngine,
    registry: &'a ActionRegistry,
    problems: Vec<Problem>,
    /// The document's `params`, as written (a `for_each` body is checked with them).
    params_source: Option<&'a Value>,
    /// Checking a `for_each` body: another `for_each` is refused there.
    in_body: bool,
}

/// A `goto` before step ids are resolved.
enum RawTarget {
    Id(String),
    End,
}

impl Checker<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    fn script(&mut self, path: &str, value: Option<&Value>) -> Option<Script> {
        let source = self.string(path, value?)?;
        match self.engine.compile_script(source) {
            Ok(s) => Some(s),
            Err(e) => {
                self.compile_problem(path, e);
                None
            }
        }
    }

    fn compile_problem(&mut self, path: &str, e: CompileError) {
        self.problem(path, format!("Rhai error: {e}"));
    }

    fn string<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v str> {
        match value.as_str() {
            Some(s) => Some(s),
            None => {
                self.problem(path, "must be a string");
                None
            }
        }
    }

    fn duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let s = self.string(path, value)?;
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn object<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
        match value.as_object() {
            Some(m) => Some(m),
            None => {
                self.problem(path, "must be an object");
                None
            }
        }
    }

    fn only_keys(&mut self, path: &str, map: &Map<String, Value>, allowed: &[&str]) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(format!("{path}.{key}"), format!("unknown field (expected one of: {})", allowed.join(", ")));
            }
        }
    }

    fn target(&mut self, path: &str, value: &Value) -> Option<RawTarget> {
        let s = self.string(path, value)?;
        Some(if s == "end" { RawTarget::End } else { RawTarget::Id(s.to_string()) })
    }

    fn trigger(&mut self, value: Option<&Value>) -> Option<Trigger> {
        let Some(value) = value else {
            self.problem("trigger", "is required");
            return None;
        };
        let map = self.object("trigger", value)?;
        let kinds: Vec<&str> = ["event", "webhook", "schedule", "manual", "call", "stripe"].into_iter().filter(|k| map.contains_key(*k)).collect();
        if kinds.len() != 1 {
            self.problem("trigger", "must have exactly one of: event, webhook, schedule, manual, call, stripe");
            return None;
        }
        match kinds[0] {
            "stripe" => {
                self.only_keys("trigger", map, &["stripe"]);
                let spec = self.object("trigger.stripe", &map["stripe"])?;
                self.only_keys("trigger.stripe", spec, &["events"]);
                let Some(list) = spec.get("events").and_then(Value::as_array).filter(|l| !l.is_empty()) else {
                    self.problem("trigger.stripe.events", "is required: a list of Stripe event types, e.g. [payment_intent.succeeded, invoice.paid]");
                    return None;
                };
                let mut events = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let path = format!("trigger.stripe.events[{i}]");
                    let Some(name) = self.string(&path, item) else { continue };
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'*') {
                        self.problem(path, "must be a Stripe event type such as invoice.paid (lowercase, dots), or * for every event");
                        continue;
                    }
                    events.push(name.to_string());
                }
                Some(Trigger::Stripe { events })
            }
            "call" => {
                self.only_keys("trigger", map, &["call"]);
                if !matches!(&map["call"], Value::Null) && map["call"].as_object().is_none_or(|m| !m.is_empty()) {
                    self.problem("trigger.call", "must be {} (a phone number is bound to the workflow with POST /v1/numbers)");
                }
                Some(Trigger::Call)
            }
            "event" => {
                self.only_keys("trigger", map, &["event", "when"]);
                let event_type = self.string("trigger.event", &map["event"])?.to_string();
                if event_type.is_empty() {
                    self.problem("trigger.event", "must not be empty");
                }
                let when = self.script("trigger.when", map.get("when"));
                Some(Trigger::Event { event_type, when })
            }
            "webhook" => {
                self.only_keys("trigger", map, &["webhook"]);
                let secret = match &map["webhook"] {
                    Value::Null => None,
                    Value::Object(w) => {
                        self.only_keys("trigger.webhook", w, &["secret"]);
                        match w.get("secret") {
                            None => None,
                            Some(Value::String(s)) if s.is_empty() => {
                                self.problem("trigger.webhook.secret", "must not be empty");
                                None
                            }
                            Some(v) if WebhookSecret::from_stored(v).is_some() => WebhookSecret::from_stored(v),
                            Some(_) => {
                                self.problem("trigger.webhook.secret", "must be a string (it is stored sealed and shown as {sealed: …})");
                                None
                            }
                        }
                    }
                    _ => {
                        self.problem("trigger.webhook", "must be an object, e.g. {} or {secret: …}");
                        None
                    }
                };
                Some(Trigger::Webhook { secret })
            }
            "manual" => {
                self.only_keys("trigger", map, &["manual"]);
                Some(Trigger::Manual)
            }
            _ => {
                self.only_keys("trigger", map, &["schedule"]);
                let spec = self.object("trigger.schedule", &map["schedule"])?;
                self.only_keys("trigger.schedule", spec, &["cron", "timezone", "catch_up"]);
                let Some(cron) = spec.get("cron").and_then(|c| self.string("trigger.schedule.cron", c)) else {
                    self.problem("trigger.schedule.cron", "is required, e.g. \"0 9 * * *\" (every day at 09:00)");
                    return None;
                };
                let cron = match crate::schedule::CronSpec::parse(cron) {
                    Ok(c) => c,
                    Err(e) => {
                        self.problem("trigger.schedule.cron", e);
                        return None;
                    }
                };
                let timezone = spec.get("timezone").and_then(|t| self.string("trigger.schedule.timezone", t)).map(str::to_string);
                if let Some(tz) = &timezone
                    && tz.parse::<chrono_tz::Tz>().is_err()
                {
                    self.problem("trigger.schedule.timezone", format!("'{tz}' is not an IANA timezone (e.g. Europe/Berlin)"));
                }
                let catch_up = match spec.get("catch_up") {
                    None => crate::schedule::CatchUp::default(),
                    Some(v) => match serde_json::from_value(v.clone()) {
                        Ok(c) => c,
                        Err(_) => {
                            self.problem("trigger.schedule.catch_up", "must be latest, all or none");
                            crate::schedule::CatchUp::default()
                        }
                    },
                };
                Some(Trigger::Schedule { cron: Box::new(cron), timezone, catch_up })
            }
        }
    }

    fn params(&mut self, value: Option<&Value>) -> Value {
        let mut out = Map::new();
        let Some(value) = value else { return Value::Object(out) };
        let Some(map) = self.object("params", value) else { return Value::Object(out) };
        for (name, spec) in map {
            // `{type, default, value, help, required}`; anything else is the value itself.
            let v = match spec {
                Value::Object(s) if s.contains_key("type") || s.contains_key("default") || s.contains_key("value") => {
                    s.get("value").or_else(|| s.get("default")).cloned().unwrap_or(Value::Null)
                }
                other => other.clone(),
            };
            out.insert(name.clone(), v);
        }
        Value::Object(out)
    }

    fn retry(&mut self, path: &str, value: &Value, default: RetryPolicy) -> RetryPolicy {
        let mut policy = default;
        let Some(map) = self.object(path, value) else { return policy };
        self.only_keys(path, map, &["max_attempts", "backoff"]);
        if let Some(n) = map.get("max_attempts") {
            match n.as_u64() {
                Some(n @ 1..=100) => policy.max_attempts = n as u32,
                _ => self.problem(format!("{path}.max_attempts"), "must be a whole number from 1 to 100"),
            }
        }
        if let Some(b) = map.get("backoff")
            && let Some(d) = self.duration(&format!("{path}.backoff"), b)
        {
            policy.backoff = d;
        }
        policy
    }

    fn on_error(&mut self, path: &str, value: Option<&Value>) -> (OnErrorRaw, bool) {
        let Some(value) = value else { return (OnErrorRaw::Fail, true) };
        let raw = match value {
            Value::String(s) if s == "fail" => OnErrorRaw::Fail,
            Value::String(s) if s == "continue" => OnErrorRaw::Continue,
            Value::String(s) if s.starts_with("goto ") => {
                let t = s["goto ".len()..].trim();
                OnErrorRaw::Goto(if t == "end" { RawTarget::End } else { RawTarget::Id(t.to_string()) })
            }
            Value::Object(m) if m.len() == 1 && m.contains_key("goto") => match self.target(&format!("{path}.goto"), &m["goto"]) {
                Some(t) => OnErrorRaw::Goto(t),
                None => return (OnErrorRaw::Fail, false),
            },
            _ => {
                self.problem(path, "must be fail, continue, or goto <step id>");
                return (OnErrorRaw::Fail, false);
            }
        };
        (raw, true)
    }

    fn action_input(&mut self, path: &str, kind: &str, value: Option<&Value>) -> ValueTemplate {
        let empty = Value::Object(Map::new());
        let value = value.unwrap_or(&empty);
        let Some(action) = self.registry.get(kind).cloned() else {
            return ValueTemplate::Literal(Value::Null);
        };
        let Some(map) = self.object(path, value) else { return ValueTemplate::Literal(Value::Null) };
        if let Some(schema) = self.registry.input_schema(kind) {
            for (field, message) in schema.check(kind, map) {
                self.problem(format!("{path}.{field}"), message);
            }
        }
        for (sub, message) in action.validate(map) {
            self.problem(format!("{path}.{sub}"), message);
        }
        let mut errors = Vec::new();
        let raw = action.raw_fields();
        let compiled = ValueTemplate::Object(
            map.iter()
                .map(|(k, v)| {
                    // A raw field reaches the module as written; its own validate checked it.
                    let field = if raw.contains(&k.as_str()) {
                        ValueTemplate::Literal(v.clone())
                    } else {
                        ValueTemplate::compile(self.engine, v, &format!("{path}.{k}"), &mut errors)
                    };
                    (k.clone(), field)
                })
                .collect(),
        );
        for (p, e) in errors {
            self.compile_problem(&p, e);
        }
        compiled
    }
}

enum OnErrorRaw {
    Fail,
    Continue,
    Goto(RawTarget),
}

/// The condition of a branch arm before its goto is resolved.
enum ArmWhen {
    /// `when:` that compiled.
    When(Script),
    /// `else:`.
    Else,
    /// `when:` that did not compile (already reported): its goto is still checked.
    Broken,
}

/// A step before its gotos are resolved to indices.
struct RawStep {
    id: String,
    kind: Option<RawKind>,
}

enum RawKind {
    Ready(StepKind),
    Action { kind: StepKind, on_error: OnErrorRaw },
    Branch(Vec<(ArmWhen, RawTarget, String)>),
    WaitFor { kind: StepKind, on_timeout: Option<(RawTarget, String)> },
}

/// The action that answers an inbound call.
const VOICE_ANSWER: &str = "voice.answer";

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates and compiles a workflow document. Every problem is reported, each at its path.
pub fn validate(doc: &Value, registry: &ActionRegistry, engine: &ExprEngine) -> Result<Workflow, Vec<Problem>> {
    check(doc, registry, engine, false)
}

fn check(doc: &Value, registry: &ActionRegistry, engine: &ExprEngine, in_body: bool) -> Result<Workflow, Vec<Problem>> {
    let mut c = Checker { engine, registry, problems: Vec::new(), params_source: doc.get("params"), in_body };
    let Some(top) = doc.as_object() else {
        return Err(vec![Problem { path: "".into(), message: "a workflow must be an object".into() }]);
    };
    // The limits come first, so that nothing below walks an oversized document.
    if let Some(path) = too_deep(doc, MAX_NESTING) {
        return Err(vec![Problem { path, message: format!("nested more than {MAX_NESTING} levels deep") }]);
    }
    if let Some(Value::Array(steps)) = top.get("steps")
        && steps.len() > MAX_STEPS
    {
        return Err(vec![Problem { path: "steps".into(), message: format!("has {} steps; a workflow may have at most {MAX_STEPS}", steps.len()) }]);
    }
    c.only_keys("", top, &["name", "description", "trigger", "params", "steps", "enabled"]);
    let name = match top.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            c.problem("name", "is required and must be a non-empty string");
            String::new()
        }
    };
    let enabled = match top.get("enabled") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            c.problem("enabled", "must be true or false");
            None
        }
    };
    let trigger = c.trigger(top.get("trigger"));
    let params = c.params(top.get("params"));

    let mut raw_steps = Vec::new();
    match top.get("steps") {
        Some(Value::Array(steps)) if !steps.is_empty() => {
            for (i, step) in steps.iter().enumerate() {
                raw_steps.push(raw_step(&mut c, i, step));
            }
        }
        _ => c.problem("steps", "is required and must be a non-empty list"),
    }

    let mut index = HashMap::new();
    for (i, s) in raw_steps.iter().enumerate() {
        if s.id.is_empty() {
            continue;
        }
        if index.insert(s.id.clone(), i).is_some() {
            c.problem(format!("steps[{i}].id"), format!("duplicate step id '{}'", s.id));
        }
    }
    let resolve = |c: &mut Checker<'_>, path: &str, t: &RawTarget| -> Option<Target> {
        match t {
            RawTarget::End => Some(Target::End),
            RawTarget::Id(id) => match index.get(id) {
                Some(i) => Some(Target::Step(*i)),
                None => {
                    c.problem(path, format!("unknown step id '{id}' in goto"));
                    None
                }
            },
        }
    };

    let mut steps = Vec::with_capacity(raw_steps.len());
    for (i, raw) in raw_steps.into_iter().enumerate() {
        let kind = match raw.kind {
            None => None,
            Some(RawKind::Ready(k)) => Some(k),
            Some(RawKind::Action { mut kind, on_error }) => {
                let resolved = match on_error {
                    OnErrorRaw::Fail => Some(OnError::Fail),
                    OnErrorRaw::Continue => Some(OnError::Continue),
                    OnErrorRaw::Goto(t) => resolve(&mut c, &format!("steps[{i}].on_error"), &t).map(OnError::Goto),
                };
                if let (StepKind::Action { on_error, .. }, Some(r)) = (&mut kind, resolved) {
                    *on_error = r;
                }
                Some(kind)
            }
            Some(RawKind::Branch(arms)) => {
                let mut out = Vec::new();
                for (when, target, path) in arms {
                    let goto = resolve(&mut c, &path, &target);
                    match (when, goto) {
                        (ArmWhen::When(w), Some(goto)) => out.push(Arm { when: Some(w), goto }),
                        (ArmWhen::Else, Some(goto)) => out.push(Arm { when: None, goto }),
                        _ => {}
                    }
                }
                Some(StepKind::Branch(out))
            }
            Some(RawKind::WaitFor { mut kind, on_timeout }) => {
                if let Some((t, path)) = on_timeout {
                    let resolved = resolve(&mut c, &path, &t);
                    if let StepKind::WaitFor { on_timeout, .. } = &mut kind {
                        *on_timeout = resolved;
                    }
                }
                Some(kind)
            }
        };
        if let Some(kind) = kind {
            steps.push(Step { id: raw.id, kind });
        }
    }

    // `voice.answer` answers the call that started the run: the first step of a `call` workflow,
    // and nowhere else.
    if let Some(trigger) = &trigger {
        let is_answer = |s: &Step| matches!(&s.kind, StepKind::Action { kind, .. } if kind == VOICE_ANSWER);
        if matches!(trigger, Trigger::Call) && steps.first().is_some_and(|s| !is_answer(s)) {
            c.problem("steps[0]", "a workflow triggered by calls starts with a voice.answer step, which answers the caller");
        }
        for (i, step) in steps.iter().enumerate() {
            if is_answer(step) && (i > 0 || !matches!(trigger, Trigger::Call)) {
                c.problem(format!("steps[{i}]"), "voice.answer can only be the first step of a workflow whose trigger is call: {}");
            }
        }
    }

    if c.problems.is_empty()
        && let Some(cycle_at) = find_cycle(&steps)
    {
        c.problem(format!("steps[{cycle_at}]"), format!("step '{}' is part of a cycle; workflows must be acyclic", steps[cycle_at].id));
    }
    match (c.problems.is_empty(), trigger) {
        (true, Some(trigger)) => Ok(Workflow { name, trigger, params, steps, index, enabled, source: doc.clone() }),
        _ => Err(c.problems),
    }
}

fn raw_step(c: &mut Checker<'_>, i: usize, step: &Value) -> RawStep {
    let path = format!("steps[{i}]");
    let Some(map) = c.object(&path, step) else { return RawStep { id: String::new(), kind: None } };
    let id = match map.get("id") {
        Some(Value::String(s)) if valid_id(s) && s != "end" => s.clone(),
        Some(Value::String(s)) => {
            c.problem(format!("{path}.id"), format!("'{s}' is not a valid step id (letters, digits and _, not starting with a digit, not 'end')"));
            String::new()
        }
        _ => {
            c.problem(format!("{path}.id"), "is required");
            String::new()
        }
    };
    let kinds: Vec<&str> = ["action", "delay", "branch", "wait_for", "set", "for_each", "end"].into_iter().filter(|k| map.contains_key(*k)).collect();
    if kinds.len() != 1 {
        c.problem(&path, "must have exactly one of: action, delay, branch, wait_for, set, for_each, end");
        return RawStep { id, kind: None };
    }
    let kind = match kinds[0] {
        "action" => {
            c.only_keys(&path, map, &["id", "action", "input", "connection", "retry", "timeout", "on_error", "contact_rules"]);
            let Some(kind) = c.string(&format!("{path}.action"), &map["action"]).map(str::to_string) else {
                return RawStep { id, kind: None };
            };
            let Some(module) = c.registry.get(&kind).cloned() else {
                let known: Vec<&str> = c.registry.kinds().collect();
                c.problem(format!("{path}.action"), format!("unknown action kind '{kind}' (known: {})", known.join(", ")));
                return RawStep { id, kind: None };
            };
            let input = c.action_input(&format!("{path}.input"), &kind, map.get("input"));
            let connection = map.get("connection").and_then(|v| c.string(&format!("{path}.connection"), v)).map(str::to_string);
            let retry = match map.get("retry") {
                Some(v) => c.retry(&format!("{path}.retry"), v, module.retry_policy()),
                None => module.retry_policy(),
            };
            let timeout = match map.get("timeout") {
                Some(v) => match c.duration(&format!("{path}.timeout"), v) {
                    Some(d) if d > MAX_ACTION_TIMEOUT || d.is_zero() => {
                        c.problem(format!("{path}.timeout"), "must be more than 0 and at most 10m");
                        d
                    }
                    Some(d) => d,
                    None => module.timeout(),
                },
                None => module.timeout(),
            };
            let (on_error, _) = c.on_error(&format!("{path}.on_error"), map.get("on_error"));
            let ignore_quiet_hours = match map.get("contact_rules") {
                None => false,
                Some(Value::String(s)) if s == "apply" => false,
                Some(Value::String(s)) if s == "ignore" => true,
                Some(_) => {
                    c.problem(
                        format!("{path}.contact_rules"),
                        "must be 'apply' (the default) or 'ignore' (quiet hours do not hold this step; opt-outs still do)",
                    );
                    false
                }
            };
            RawKind::Action { kind: StepKind::Action { kind, input, connection, retry, timeout, on_error: OnError::Fail, ignore_quiet_hours }, on_error }
        }
        "delay" => {
            c.only_keys(&path, map, &["id", "delay"]);
            let dpath = format!("{path}.delay");
            let delay = match &map["delay"] {
                Value::String(_) => c.duration(&dpath, &map["delay"]).map(Delay::For),
                Value::Object(d) if d.len() == 1 && d.contains_key("for") => c.duration(&format!("{dpath}.for"), &d["for"]).map(Delay::For),
                Value::Object(d) if d.len() == 1 && d.contains_key("until") => {
                    let upath = format!("{dpath}.until");
                    let source = c.string(&upath, &d["until"]).unwrap_or_default().to_string();
                    match Template::compile(c.engine, &source) {
                        Ok(Template::Literal(text)) => {
                            // A time written as is is checked now; a rendered one when it runs.
                            match chrono::DateTime::parse_from_rfc3339(text.trim()) {
                                Ok(at) if at.timestamp_millis() > crate::clock::after(chrono::Utc::now().timestamp_millis(), super::MAX_WAIT) => {
                                    c.problem(&upath, "is more than 10 years ahead");
                                    None
                                }
                                Ok(_) => Some(Delay::Until(Template::Literal(text))),
                                Err(e) => {
                                    c.problem(&upath, format!("'{text}' is not an RFC 3339 time (e.g. 2026-12-24T09:00:00Z) or a {{{{ … }}}} expression: {e}"));
                                    None
                                }
                            }
                        }
                        Ok(t) => Some(Delay::Until(t)),
                        Err(e) => {
                            c.compile_problem(&upath, e);
                            None
                        }
                    }
                }
                Value::Object(d) if d.contains_key("at") => {
                    c.only_keys(&dpath, d, &["at", "timezone"]);
                    let apath = format!("{dpath}.at");
                    let minute = match d["at"].as_str().and_then(crate::contact::minutes) {
                        Some(m) => Some(m),
                        None => {
                            c.problem(&apath, "must be a local time HH:MM, e.g. 09:00");
                            None
                        }
                    };
                    let timezone = match d.get("timezone") {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => {
                            let tpath = format!("{dpath}.timezone");
                            let source = c.string(&tpath, v).unwrap_or_default().to_string();
                            match Template::compile(c.engine, &source) {
                                Ok(Template::Literal(name)) if name.trim().parse::<chrono_tz::Tz>().is_err() => {
                                    c.problem(&tpath, format!("'{name}' is not an IANA timezone, e.g. America/New_York (or write a {{{{ … }}}} expression)"));
                                    Err(())
                                }
                                Ok(t) => Ok(Some(t)),
                                Err(e) => {
                                    c.compile_problem(&tpath, e);
                                    Err(())
                                }
                            }
                        }
                    };
                    match (minute, timezone) {
                        (Some(minute), Ok(timezone)) => Some(Delay::At { minute, timezone }),
                        _ => None,
                    }
                }
                _ => {
                    c.problem(&dpath, "must be a duration (e.g. 2h), {for: <duration>}, {until: <time>} or {at: \"09:00\", timezone: <IANA zone>}");
                    None
                }
            };
            match delay {
                Some(d) => RawKind::Ready(StepKind::Delay(d)),
                None => return RawStep { id, kind: None },
            }
        }
        "branch" => {
            c.only_keys(&path, map, &["id", "branch"]);
            let bpath = format!("{path}.branch");
            let Some(arms) = map["branch"].as_array() else {
                c.problem(&bpath, "must be a list of {when, goto} and {else}");
                return RawStep { id, kind: None };
            };
            let mut out = Vec::new();
            for (j, arm) in arms.iter().enumerate() {
                let apath = format!("{bpath}[{j}]");
                let Some(a) = c.object(&apath, arm) else { continue };
                if let Some(e) = a.get("else") {
                    c.only_keys(&apath, a, &["else"]);
                    if j + 1 != arms.len() {
                        c.problem(&apath, "else must be the last arm");
                    }
                    if let Some(t) = c.target(&format!("{apath}.else"), e) {
                        out.push((ArmWhen::Else, t, format!("{apath}.else")));
                    }
                } else {
                    c.only_keys(&apath, a, &["when", "goto"]);
                    if !a.contains_key("when") {
                        c.problem(format!("{apath}.when"), "is required (or write {else: <step id>})");
                    }
                    let when = c.script(&format!("{apath}.when"), a.get("when"));
                    match a.get("goto") {
                        // An arm whose `when` is broken still has its `goto` resolved, so that
                        // an unknown step id there is reported too.
                        Some(g) => {
                            if let Some(t) = c.target(&format!("{apath}.goto"), g) {
                                let when = match when {
                                    Some(w) => ArmWhen::When(w),
                                    None => ArmWhen::Broken,
                                };
                                out.push((when, t, format!("{apath}.goto")));
                            }
                        }
                        None => c.problem(format!("{apath}.goto"), "is required"),
                    }
                }
            }
            RawKind::Branch(out)
        }
        "wait_for" => {
            c.only_keys(&path, map, &["id", "wait_for"]);
            let wpath = format!("{path}.wait_for");
            let Some(w) = c.object(&wpath, &map["wait_for"]) else { return RawStep { id, kind: None } };
            c.only_keys(&wpath, w, &["event", "match", "timeout", "on_timeout"]);
            let event_type = match w.get("event") {
                Some(v) => c.string(&format!("{wpath}.event"), v).unwrap_or_default().to_string(),
                None => {
                    c.problem(format!("{wpath}.event"), "is required");
                    String::new()
                }
            };
            let matcher = c.script(&format!("{wpath}.match"), w.get("match"));
            let timeout = match w.get("timeout") {
                Some(v) => c.duration(&format!("{wpath}.timeout"), v).unwrap_or_default(),
                None => {
                    c.problem(format!("{wpath}.timeout"), "is required");
                    Duration::ZERO
                }
            };
            let on_timeout = w.get("on_timeout").and_then(|v| {
                let p = format!("{wpath}.on_timeout");
                c.target(&p, v).map(|t| (t, p))
            });
            RawKind::WaitFor { kind: StepKind::WaitFor { event_type, matcher, timeout, on_timeout: None }, on_timeout }
        }
        "for_each" => {
            c.only_keys(&path, map, &["id", "for_each"]);
            match for_each(c, &format!("{path}.for_each"), &map["for_each"]) {
                Some(f) => RawKind::Ready(StepKind::ForEach(Box::new(f))),
                None => return RawStep { id, kind: None },
            }
        }
        "set" => {
            c.only_keys(&path, map, &["id", "set"]);
            let spath = format!("{path}.set");
            let Some(values) = c.object(&spath, &map["set"]) else { return RawStep { id, kind: None } };
            let mut out = Vec::new();
            for (name, source) in values {
                let vpath = format!("{spath}.{name}");
                if !valid_id(name) {
                    c.problem(&vpath, "names must be letters, digits and _");
                }
                if let Some(s) = c.script(&vpath, Some(source)) {
                    out.push((name.clone(), s));
                }
            }
            RawKind::Ready(StepKind::Set(out))
        }
        _ => {
            c.only_keys(&path, map, &["id", "end"]);
            RawKind::Ready(StepKind::End)
        }
    };
    RawStep { id, kind: Some(kind) }
}

/// The successors of each step, for the cycle check.
fn successors(steps: &[Step], i: usize) -> Vec<usize> {
    let next = (i + 1 < steps.len()).then_some(i + 1);
    let step = |t: &Target| match t {
        Target::Step(j) => Some(*j),
        Target::End => None,
    };
    let mut out: Vec<usize> = Vec::new();
    match &steps[i].kind {
        StepKind::End => {}
        StepKind::Branch(arms) => {
            out.extend(arms.iter().filter_map(|a| step(&a.goto)));
            if !arms.iter().any(|a| a.when.is_none()) {
                out.extend(next);
            }
        }
        StepKind::Action { on_error, .. } => {
            out.extend(next);
            if let OnError::Goto(t) = on_error {
                out.extend(step(t));
            }
        }
        StepKind::WaitFor { on_timeout, .. } => {
            out.extend(next);
            out.extend(on_timeout.as_ref().and_then(step));
        }
        StepKind::Delay(_) | StepKind::Set(_) | StepKind::ForEach(_) => out.extend(next),
    }
    out
}

/// Names a `for_each` item may not take: the scope's own.
const RESERVED_NAMES: [&str; 12] = ["event", "steps", "vars", "params", "run", "account", "inputs", "call", "value", "item_index", "hours", "voice_hours"];

/// Checks a `for_each` step: `{items, as, steps, concurrency?, max_items?}`. Its steps are
/// checked as a workflow of their own (with the document's `params`, and the item's name known
/// to their scripts), and their problems reported under `<path>.steps[…]`.
fn for_each(c: &mut Checker<'_>, path: &str, value: &Value) -> Option<ForEach> {
    let f = c.object(path, value)?;
    c.only_keys(path, f, &["items", "as", "steps", "concurrency", "max_items"]);
    if c.in_body {
        c.problem(path, "a for_each cannot be inside another for_each's steps");
        return None;
    }
    let mut errors = Vec::new();
    let items = match f.get("items") {
        Some(v @ (Value::String(_) | Value::Array(_))) => Some(ValueTemplate::compile(c.engine, v, &format!("{path}.items"), &mut errors)),
        _ => {
            c.problem(format!("{path}.items"), "is required: a list, or a {{ … }} expression giving one (e.g. \"{{ steps.find.output.leads }}\")");
            None
        }
    };
    for (p, e) in errors {
        c.compile_problem(&p, e);
    }
    let as_name = match f.get("as") {
        Some(Value::String(s)) if valid_id(s) && !RESERVED_NAMES.contains(&s.as_str()) => Some(s.clone()),
        Some(Value::String(s)) => {
            c.problem(format!("{path}.as"), format!("'{s}' cannot name the item (letters, digits and _, not one of {})", RESERVED_NAMES.join(", ")));
            None
        }
        _ => {
            c.problem(format!("{path}.as"), "is required: the name the steps read each item by, e.g. lead");
            None
        }
    };
    let mut bound = |field: &str, default: u32, max: u32| match f.get(field) {
        None => default,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(max)).contains(&n) => n as u32,
            _ => {
                c.problem(format!("{path}.{field}"), format!("must be a whole number from 1 to {max}"));
                default
            }
        },
    };
    let concurrency = bound("concurrency", super::DEFAULT_CONCURRENCY, super::MAX_CONCURRENCY);
    let max_items = bound("max_items", super::DEFAULT_MAX_ITEMS, super::MAX_ITEMS);
    let spath = format!("{path}.steps");
    let body = match (f.get("steps"), &as_name) {
        (Some(Value::Array(steps)), Some(name)) if !steps.is_empty() => {
            let mut doc = serde_json::json!({ "name": "for_each", "trigger": { "manual": {} }, "steps": steps });
            if let Some(params) = c.params_source {
                doc["params"] = params.clone();
            }
            match check(&doc, c.registry, &c.engine.with_item(name), true) {
                Ok(w) => Some(std::sync::Arc::new(w)),
                Err(problems) => {
                    // The document's own problems (its params) are reported once, at the top.
                    let before = c.problems.len();
                    for p in problems.into_iter().filter(|p| p.path.starts_with("steps")) {
                        c.problem(format!("{path}.{}", p.path), p.message);
                    }
                    if c.problems.len() == before {
                        c.problem(path, "its steps cannot be checked until the workflow's params are valid");
                    }
                    None
                }
            }
        }
        (Some(Value::Array(steps)), _) if !steps.is_empty() => None,
        _ => {
            c.problem(&spath, "is required: the steps each item runs, a non-empty list");
            None
        }
    };
    Some(ForEach { items: items?, as_name: as_name?, body: body?, concurrency, max_items })
}

/// The index of a step on a cycle, if the step graph has one. Iterative (an explicit stack), so
/// a long chain of steps cannot overflow the thread's stack.
fn find_cycle(steps: &[Step]) -> Option<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::Unvisited; steps.len()];
    for root in 0..steps.len() {
        if mark[root] != Mark::Unvisited {
            continue;
        }
        // Each frame: a step and the successors still to look at.
        let mut stack = vec![(root, successors(steps, root).into_iter())];
        mark[root] = Mark::OnPath;
        while let Some((i, rest)) = stack.last_mut() {
            match rest.next() {
                Some(j) => match mark[j] {
                    Mark::OnPath => return Some(j),
                    Mark::Unvisited => {
                        mark[j] = Mark::OnPath;
                        stack.push((j, successors(steps, j).into_iter()));
                    }
                    Mark::Done => {}
                },
                None => {
                    mark[*i] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    None
}

/// The path of the first value nested deeper than `max` levels (the document is level 1), found
/// with an explicit stack rather than recursion.
fn too_deep(doc: &Value, max: usize) -> Option<String> {
    let mut stack: Vec<(&Value, usize, String)> = vec![(doc, 1, String::new())];
    while let Some((value, depth, path)) = stack.pop() {
        let children: Vec<(&Value, String)> = match value {
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (v, format!("{path}[{i}]"))).collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") })).collect(),
            _ => continue,
        };
        if depth >= max && !children.is_empty() {
            return Some(path);
        }
        stack.extend(children.into_iter().map(|(v, p)| (v, depth + 1, p)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A goto chain of `n` steps, closed into a cycle or ending the run.
    fn chain(n: usize, cycle: bool) -> Vec<Step> {
        (0..n)
            .map(|i| {
                let goto = if i + 1 < n {
                    Target::Step(i + 1)
                } else if cycle {
                    Target::Step(0)
                } else {
                    Target::End
                };
                Step { id: format!("s{i}"), kind: StepKind::Branch(vec![Arm { when: None, goto }]) }
            })
            .collect()
    }

    /// Far past the step limit (which validation checks first), the cycle check still walks a
    /// long chain without recursion: a recursive walk overflows the test thread's stack here.
    #[test]
    fn cycle_check_is_iterative() {
        assert_eq!(find_cycle(&chain(500_000, false)), None);
        assert_eq!(find_cycle(&chain(500_000, true)), Some(0));
    }

    #[test]
    fn stripe_triggers_name_event_types() {
        let doc = |events: serde_json::Value| serde_json::json!({ "name": "w", "trigger": { "stripe": { "events": events } }, "steps": [{ "id": "d", "delay": "1s" }] });
        let w = validate(&doc(serde_json::json!(["invoice.paid", "payment_intent.succeeded"])), &ActionRegistry::new(), &ExprEngine::new()).unwrap();
        assert_eq!(w.trigger.kind(), "stripe");
        assert!(w.trigger.wants_stripe("invoice.paid") && !w.trigger.wants_stripe("invoice.created"));
        let every = validate(&doc(serde_json::json!(["*"])), &ActionRegistry::new(), &ExprEngine::new()).unwrap();
        assert!(every.trigger.wants_stripe("charge.refunded"));
        let problems = validate(&doc(serde_json::json!(["invoice.paid", "Invoice Paid", 3])), &ActionRegistry::new(), &ExprEngine::new()).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["trigger.stripe.events[1]", "trigger.stripe.events[2]"], "{problems:?}");
        let problems = validate(&doc(serde_json::json!([])), &ActionRegistry::new(), &ExprEngine::new()).unwrap_err();
        assert_eq!(problems[0].path, "trigger.stripe.events");
    }

    #[test]
    fn a_broken_arm_still_reports_its_unknown_goto() {
        let doc = serde_json::json!({
            "name": "w", "trigger": { "manual": {} },
            "steps": [{ "id": "b", "branch": [{ "when": "event.x ==", "goto": "nowhere" }, { "else": "gone" }] }],
        });
        let problems = validate(&doc, &ActionRegistry::new(), &ExprEngine::new()).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["steps[0].branch[0].when", "steps[0].branch[0].goto", "steps[0].branch[1].else"], "{problems:?}");
    }

    #[test]
    fn nesting_is_measured_from_the_document() {
        let mut v = serde_json::json!(1);
        for _ in 0..31 {
            v = serde_json::json!({ "a": v });
        }
        assert_eq!(too_deep(&v, 32), None);
        let deeper = serde_json::json!([v]);
        assert_eq!(too_deep(&deeper, 32).as_deref(), Some(format!("[0]{}", ".a".repeat(30)).as_str()));
    }
}
