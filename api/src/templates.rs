//! The template catalogue: workflow templates as data files under `templates/`,
//! compiled into the binary, and what enabling one makes of its parameters and connections.
//!
//! A template file is YAML: `slug`, `title`, `description`, `connections` (the providers its
//! steps send through), `params` (typed: string, number, duration, phone, email; `required`,
//! `default`, `help`) and `workflow`, an ordinary definition (docs/workflows.md) that reads parameters as
//! `{{ params.<name> }}`. Enabling makes the account its own copy: every string that is exactly
//! `{{ params.<name> }}` becomes the literal value (so a delay reads `1d`, a number stays a
//! number), the values are kept as the workflow's `params` for the expressions that remain, and
//! each action step gets the connection the user chose for its provider.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_runtime::definition::{Problem, parse_duration};

/// Every template file, by slug. A test checks that each file in `templates/` is listed here
/// and validates against the action registry.
pub const FILES: [(&str, &str); 10] = [
    ("lead-nurture", include_str!("../../templates/lead-nurture.yaml")),
    ("payment-follow-up", include_str!("../../templates/payment-follow-up.yaml")),
    ("negative-feedback-alert", include_str!("../../templates/negative-feedback-alert.yaml")),
    ("referral-request", include_str!("../../templates/referral-request.yaml")),
    ("lead-scoring", include_str!("../../templates/lead-scoring.yaml")),
    ("feedback-survey", include_str!("../../templates/feedback-survey.yaml")),
    ("no-show-recovery", include_str!("../../templates/no-show-recovery.yaml")),
    ("quote-follow-up", include_str!("../../templates/quote-follow-up.yaml")),
    ("support-line", include_str!("../../templates/support-line.yaml")),
    ("birthday-campaign", include_str!("../../templates/birthday-campaign.yaml")),
];

/// The parsed catalogue, in [`FILES`] order. A file that does not parse panics on first use
/// (and fails the catalogue test), since templates ship inside the binary.
pub static CATALOGUE: LazyLock<Vec<Template>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(slug, text)| {
            let t: Template = serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("templates/{slug}.yaml: {e}"));
            assert_eq!(&t.slug, slug, "templates/{slug}.yaml: slug must match the file name");
            t
        })
        .collect()
});

/// A template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Its stable name, e.g. `lead-nurture`.
    pub slug: String,
    /// A short title.
    pub title: String,
    /// What it does, for a studio owner.
    pub description: String,
    /// Providers its steps send through.
    #[serde(default)]
    pub connections: Vec<String>,
    /// The form a user fills.
    #[serde(default)]
    pub params: Vec<Param>,
    /// The workflow definition.
    pub workflow: Value,
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TemplateParamType)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Any text.
    String,
    /// A JSON number.
    Number,
    /// `30s`, `15m`, `2h`, `1d`, `1w`.
    Duration,
    /// An E.164 phone number.
    Phone,
    /// An email address.
    Email,
    /// The name of one of the account's connections.
    Connection,
}

/// One parameter of a template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Its name, read as `params.<name>`.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Whether it must be given (a parameter with a default never must).
    #[serde(default)]
    pub required: bool,
    /// The value used when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Help text for the form.
    #[serde(default)]
    pub help: String,
}

impl Template {
    /// A template by slug.
    pub fn find(slug: &str) -> Option<&'static Template> {
        CATALOGUE.iter().find(|t| t.slug == slug)
    }

    /// Checks the given values; returns every value (defaults filled) or every problem, with
    /// paths `params.<name>`.
    pub fn values(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, Vec<Problem>> {
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                problems.push(problem(&format!("params.{name}"), "this template has no such parameter"));
            }
        }
        let mut values = Map::new();
        for p in &self.params {
            let path = format!("params.{}", p.name);
            match given.get(&p.name).filter(|v| !v.is_null()).or(p.default.as_ref()) {
                None if p.required => problems.push(problem(&path, format!("required: {}", p.help))),
                None => {}
                Some(v) => match check(p.ty, v) {
                    Ok(v) => {
                        values.insert(p.name.clone(), v);
                    }
                    Err(message) => problems.push(problem(&path, message)),
                },
            }
        }
        if problems.is_empty() { Ok(values) } else { Err(problems) }
    }

    /// The workflow document an account gets: parameters substituted and kept as `params`,
    /// `connections` (provider → connection name) set on the steps of those providers.
    pub fn instantiate(&self, values: &Map<String, Value>, connections: &BTreeMap<String, String>, providers_of: impl Fn(&str) -> Vec<String>) -> Value {
        let mut doc = self.workflow.clone();
        substitute(&mut doc, values);
        pin_connections(doc.get_mut("steps"), connections, &providers_of);
        let params: Map<String, Value> =
            self.params.iter().filter_map(|p| values.get(&p.name).map(|v| (p.name.clone(), json!({ "type": param_kind(p.ty), "value": v })))).collect();
        doc["params"] = Value::Object(params);
        doc
    }
}

/// Names the chosen connection on every action step, those inside a `for_each` too.
fn pin_connections(steps: Option<&mut Value>, connections: &BTreeMap<String, String>, providers_of: &impl Fn(&str) -> Vec<String>) {
    let Some(steps) = steps.and_then(Value::as_array_mut) else { return };
    for step in steps {
        if let Some(body) = step.get_mut("for_each") {
            pin_connections(body.get_mut("steps"), connections, providers_of);
            continue;
        }
        let Some(kind) = step.get("action").and_then(Value::as_str).map(str::to_string) else { continue };
        if let Some(name) = providers_of(&kind).iter().find_map(|p| connections.get(p)) {
            step["connection"] = json!(name);
        }
    }
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_string(), message: message.into() }
}

/// The workflow-format type a template parameter is stored as.
fn param_kind(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Number => "number",
        _ => "string",
    }
}

/// A value of a type, normalised (numbers given as text become numbers).
fn check(ty: ParamType, v: &Value) -> Result<Value, String> {
    let text = || v.as_str().map(str::trim).filter(|s| !s.is_empty());
    match ty {
        ParamType::Number => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => {
                s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).ok_or_else(|| format!("'{s}' is not a number"))
            }
            _ => Err("must be a number".into()),
        },
        ParamType::String | ParamType::Connection => text().map(|s| json!(s)).ok_or_else(|| "must be non-empty text".into()),
        ParamType::Duration => {
            let s = text().ok_or("must be a duration like 30m, 2h or 1d")?;
            parse_duration(s).map(|_| json!(s))
        }
        ParamType::Phone => {
            let s = text().ok_or("must be a phone number in E.164 form, e.g. +15550001111")?;
            if switchboard_actions::sms_send::is_e164(s) { Ok(json!(s)) } else { Err(format!("'{s}' is not a phone number in E.164 form, e.g. +15550001111")) }
        }
        ParamType::Email => {
            let s = text().ok_or("must be an email address")?;
            match s.split_once('@') {
                Some((local, domain)) if !local.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace) => Ok(json!(s)),
                _ => Err(format!("'{s}' is not an email address")),
            }
        }
    }
}

/// Replaces every string that is exactly `{{ params.<name> }}` with the value.
fn substitute(v: &mut Value, values: &Map<String, Value>) {
    match v {
        Value::String(s) => {
            let inner = s.trim().strip_prefix("{{").and_then(|r| r.strip_suffix("}}")).map(str::trim);
            if let Some(value) = inner.and_then(|e| e.strip_prefix("params.")).and_then(|name| values.get(name.trim())) {
                *v = value.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, values)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute(i, values)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_parameter_strings_become_values() {
        let mut doc = json!({ "steps": [{ "delay": "{{ params.wait }}" }, { "input": { "n": "{{params.n}}", "text": "Hi {{ params.name }}" } }] });
        let values: Map<String, Value> = [("wait".to_string(), json!("1d")), ("n".into(), json!(3)), ("name".into(), json!("Ada"))].into_iter().collect();
        substitute(&mut doc, &values);
        assert_eq!(doc, json!({ "steps": [{ "delay": "1d" }, { "input": { "n": 3, "text": "Hi {{ params.name }}" } }] }));
    }

    /// Every help text reads to its end as written in the file: an unquoted ` #` starts a YAML
    /// comment and would cut "(e.g. #managers)" short.
    #[test]
    fn help_texts_end_as_written() {
        for ((slug, text), t) in FILES.iter().zip(CATALOGUE.iter()) {
            let written: Vec<String> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("help:"))
                .map(|rest| {
                    let rest = rest.trim();
                    if rest.starts_with('"') || rest.starts_with('\'') { serde_yaml_ng::from_str::<String>(rest).unwrap() } else { rest.to_string() }
                })
                .collect();
            let parsed: Vec<&str> = t.params.iter().map(|p| p.help.as_str()).collect();
            assert_eq!(parsed, written, "templates/{slug}.yaml: a help text is not read as written (quote it)");
        }
    }

    /// Every file under `templates/` is in the catalogue, and every template, enabled with its
    /// defaults and a sample value for each parameter, validates against the action registry:
    /// a broken template cannot land.
    #[test]
    fn every_template_file_is_listed_and_validates() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(slug) = name.strip_suffix(".yaml") {
                assert!(FILES.iter().any(|(s, _)| *s == slug), "templates/{name} is not listed in FILES");
            }
        }
        let vault =
            std::sync::Arc::new(switchboard_integrations::connections::Vault::from_hex(&switchboard_integrations::connections::Vault::generate_hex()).unwrap());
        let registry = switchboard_actions::registry(&switchboard_actions::ActionsConfig::new(vault)).unwrap();
        let expr = switchboard_runtime::expr::ExprEngine::new();
        assert_eq!(CATALOGUE.len(), FILES.len());
        for t in CATALOGUE.iter() {
            assert!(t.workflow.get("params").is_none(), "{}: parameters belong in the template, not the workflow", t.slug);
            let sample: Map<String, Value> = t
                .params
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| {
                    let v = match p.ty {
                        ParamType::Number => json!(42),
                        ParamType::Duration => json!("1h"),
                        ParamType::Phone => json!("+15550001111"),
                        ParamType::Email => json!("owner@studio.example"),
                        ParamType::String | ParamType::Connection => json!("Studio Ada"),
                    };
                    (p.name.clone(), v)
                })
                .collect();
            let values = t.values(&sample).unwrap_or_else(|p| panic!("{}: {p:?}", t.slug));
            for p in &t.params {
                assert!(!p.help.trim().is_empty(), "{}: parameter {} needs help text", t.slug, p.name);
                if let Some(d) = &p.default {
                    assert!(check(p.ty, d).is_ok(), "{}: the default of {} is not a valid {:?}", t.slug, p.name, p.ty);
                }
            }
            let connections: BTreeMap<String, String> = t.connections.iter().map(|p| (p.clone(), format!("{p}-main"))).collect();
            let providers_of = |kind: &str| registry.get(kind).map(|a| a.providers().iter().map(|p| p.to_string()).collect()).unwrap_or_default();
            let doc = t.instantiate(&values, &connections, providers_of);
            let workflow = switchboard_runtime::definition::validate(&doc, &registry, &expr).unwrap_or_else(|p| panic!("{}: {p:#?}", t.slug));
            // Every provider a step sends through is declared, and every declared one is used.
            use switchboard_runtime::definition::StepKind;
            let bodies = workflow.steps.iter().filter_map(|s| match &s.kind {
                StepKind::ForEach(f) => Some(f.body.steps.iter()),
                _ => None,
            });
            let mut used: Vec<&str> = workflow
                .steps
                .iter()
                .chain(bodies.flatten())
                .filter_map(|s| match &s.kind {
                    StepKind::Action { kind, .. } => registry.get(kind).map(|a| a.providers()),
                    _ => None,
                })
                .flatten()
                .copied()
                .collect();
            used.sort();
            used.dedup();
            let mut declared: Vec<&str> = t.connections.iter().map(String::as_str).collect();
            declared.sort();
            assert_eq!(used, declared, "{}: `connections` must list exactly the providers its steps use", t.slug);
        }
    }

    #[test]
    fn parameter_types_are_checked() {
        assert!(check(ParamType::Phone, &json!("+15550001111")).is_ok());
        assert!(check(ParamType::Phone, &json!("555-1234")).is_err());
        assert!(check(ParamType::Email, &json!("ada@studio.example")).is_ok());
        assert!(check(ParamType::Email, &json!("ada")).is_err());
        assert_eq!(check(ParamType::Number, &json!("80")).unwrap(), json!(80.0));
        assert!(check(ParamType::Duration, &json!("2 fortnights")).is_err());
        assert!(check(ParamType::String, &json!("")).is_err());
    }
}
