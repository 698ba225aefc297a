//! Save-time checks of a step's input against its action's derived JSON Schema.
//!
//! An action's `Input` derives its schema with `schemars`; this module reads what save time
//! needs from it (the fields, which are required, whether others are refused, each field's JSON
//! types) and checks a step's literal input against that. It is deliberately not a full JSON
//! Schema validator: step inputs hold `{{ … }}` templates, which a validator would refuse
//! wherever a non-string is expected, and the deeper rules (a phone number's form, a URL) are
//! the module's own [`super::Action::validate`], with its own messages. The rendered input is
//! checked completely at run time, when it is deserialized into `Input`.

use schemars::JsonSchema;
use serde_json::{Map, Value};

/// A JSON type a field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// A string.
    String,
    /// An object.
    Object,
    /// An array.
    Array,
    /// Any number.
    Number,
    /// An integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// `null` (an optional field).
    Null,
}

impl JsonType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "object" => Self::Object,
            "array" => Self::Array,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "null" => Self::Null,
            _ => return None,
        })
    }

    fn of_value(value: &Value) -> Self {
        match value {
            Value::String(_) => Self::String,
            Value::Object(_) => Self::Object,
            Value::Array(_) => Self::Array,
            Value::Number(_) => Self::Number,
            Value::Bool(_) => Self::Boolean,
            Value::Null => Self::Null,
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
            Self::Number => value.is_number(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Boolean => value.is_boolean(),
            Self::Null => value.is_null(),
        }
    }

    /// As the save-time message names it: "must be {a string}".
    fn article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Object => "an object",
            Self::Array => "an array",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Boolean => "true or false",
            Self::Null => "null",
        }
    }

    /// As the docs name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Object => "object",
            Self::Array => "array",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Null => "null",
        }
    }
}

/// One top-level field of an action's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputField {
    /// Its name.
    pub name: String,
    /// Whether a step must give it.
    pub required: bool,
    /// The JSON types it accepts; empty for any value.
    pub types: Vec<JsonType>,
    /// The field's doc comment, for the docs.
    pub description: Option<String>,
}

/// What save time reads from an action's input schema.
#[derive(Debug, Clone)]
pub struct InputSchema {
    /// The fields, sorted by name.
    pub fields: Vec<InputField>,
    /// Whether fields not listed are refused (`#[serde(deny_unknown_fields)]`).
    pub closed: bool,
    /// The schema as `schemars` derived it (served and documented as is).
    pub json: Value,
}

impl InputSchema {
    /// The schema of `I`.
    pub fn of<I: JsonSchema>() -> Self {
        Self::from_json(schemars::schema_for!(I).to_value())
    }

    /// Reads a derived schema: an object with `properties`, `required` and
    /// `additionalProperties`; field types follow `$ref`s into `$defs` and the alternatives of
    /// `anyOf`/`oneOf` (how `Option` and enums are derived).
    pub fn from_json(json: Value) -> Self {
        let required: Vec<&str> = json.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let fields = json
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, property)| InputField {
                name: name.clone(),
                required: required.contains(&name.as_str()),
                types: types(&json, property, 0).unwrap_or_default(),
                description: property.get("description").and_then(Value::as_str).map(str::to_owned),
            })
            .collect();
        let closed = json.get("additionalProperties") == Some(&Value::Bool(false));
        Self { fields, closed, json }
    }

    /// The save-time problems of a step's literal input of action `kind`, as `(field, message)`:
    /// unknown fields (when closed), missing required ones, and literal values of the wrong JSON
    /// type. A string that is a whole `{{ … }}` template is acceptable wherever a value is (it
    /// may render to any type); other strings only where a string is.
    pub fn check(&self, kind: &str, input: &Map<String, Value>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.closed {
            for key in input.keys() {
                if !self.fields.iter().any(|f| &f.name == key) {
                    let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
                    problems.push((key.clone(), format!("unknown input of {kind} (expected: {})", names.join(", "))));
                }
            }
        }
        for field in &self.fields {
            match input.get(&field.name) {
                None if field.required => problems.push((field.name.clone(), format!("is required by {kind}"))),
                None => {}
                Some(value) => {
                    let whole_template = value.as_str().is_some_and(|s| s.trim_start().starts_with("{{"));
                    if field.types.is_empty() || whole_template || field.types.iter().any(|t| t.accepts(value)) {
                        continue;
                    }
                    let wanted: Vec<&str> = field.types.iter().filter(|t| **t != JsonType::Null).map(|t| t.article()).collect();
                    problems.push((field.name.clone(), format!("must be {}", wanted.join(" or "))));
                }
            }
        }
        problems
    }
}

/// The JSON types a property schema accepts, `None` for any (no `type`, or `true`).
fn types(root: &Value, schema: &Value, depth: usize) -> Option<Vec<JsonType>> {
    // `$ref`s of derived schemas point into `$defs` and do not nest deeply; the bound only
    // guards against a cycle.
    if depth > 8 {
        return None;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.strip_prefix("#/$defs/")?;
        return types(root, root.get("$defs")?.get(name)?, depth + 1);
    }
    match schema.get("type") {
        Some(Value::String(t)) => return Some(JsonType::parse(t).into_iter().collect()),
        Some(Value::Array(ts)) => return Some(ts.iter().filter_map(Value::as_str).filter_map(JsonType::parse).collect()),
        _ => {}
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let mut found: Vec<JsonType> = values.iter().map(JsonType::of_value).collect();
        found.dedup();
        return Some(found);
    }
    if let Some(value) = schema.get("const") {
        return Some(vec![JsonType::of_value(value)]);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
            let mut all = Vec::new();
            for alternative in alternatives {
                // One alternative that takes anything makes the union take anything.
                for t in types(root, alternative, depth + 1)? {
                    if !all.contains(&t) {
                        all.push(t);
                    }
                }
            }
            return Some(all);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        /// Who to write to.
        to: String,
        count: Option<u32>,
        fields: Map<String, Value>,
        anything: Option<Value>,
        mode: Option<Mode>,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    fn check(input: Value) -> Vec<(String, String)> {
        InputSchema::of::<Sample>().check("x.y", input.as_object().unwrap())
    }

    #[test]
    fn fields_come_from_the_derived_schema() {
        let schema = InputSchema::of::<Sample>();
        assert!(schema.closed);
        let to = &schema.fields.iter().find(|f| f.name == "to").unwrap();
        assert_eq!((to.required, to.types.as_slice(), to.description.as_deref()), (true, &[JsonType::String][..], Some("Who to write to.")));
        let mode = &schema.fields.iter().find(|f| f.name == "mode").unwrap();
        assert_eq!((mode.required, mode.types.as_slice()), (false, &[JsonType::String, JsonType::Null][..]));
        assert!(schema.fields.iter().find(|f| f.name == "anything").unwrap().types.is_empty());
    }

    #[test]
    fn literals_are_checked_and_templates_wait_for_run_time() {
        assert!(check(json!({"to": "a", "fields": {}, "count": 3, "anything": [1], "mode": "fast"})).is_empty());
        assert!(check(json!({"to": "{{ x }}", "fields": "{{ trigger.fields }}", "count": "{{ vars.n }}"})).is_empty());
        assert_eq!(check(json!({"fields": {}})), [("to".to_owned(), "is required by x.y".to_owned())]);
        assert_eq!(
            check(json!({"to": 5, "fields": "text {{ x }}", "count": "3"})),
            [
                ("count".to_owned(), "must be an integer".to_owned()),
                ("fields".to_owned(), "must be an object".to_owned()),
                ("to".to_owned(), "must be a string".to_owned()),
            ]
        );
        assert_eq!(
            check(json!({"to": "a", "fields": {}, "cc": "b"})),
            [("cc".to_owned(), "unknown input of x.y (expected: anything, count, fields, mode, to)".to_owned())]
        );
    }
}
