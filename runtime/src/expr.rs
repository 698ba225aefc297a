//! The sandboxed Rhai engine. Conditions, `set` values and `match` filters are Rhai scripts;
//! `{{ … }}` inside input strings are Rhai expressions. Scripts run with no I/O, with bounded
//! operations, call depth, expression depth and value sizes, so an infinite loop in a condition
//! fails that step with a clear error and harms nothing else.

use std::sync::Arc;

use rhai::packages::{BasicArrayPackage, BasicMapPackage, BasicMathPackage, BasicStringPackage, CorePackage, LogicPackage, MoreStringPackage, Package};
use rhai::{AST, Dynamic, Engine, EvalAltResult, ParseError, Position, Scope};
use serde_json::Value;

/// The names a script can read. They are pushed in this order on every evaluation.
pub const SCOPE_NAMES: [&str; 6] = ["event", "steps", "vars", "params", "run", "account"];

/// What a script sees, as JSON values, one per [`SCOPE_NAMES`] entry.
#[derive(Debug, Clone, Default)]
pub struct ScopeData {
    /// The trigger payload.
    pub event: Value,
    /// `{<step id>: {output}}` of steps already run.
    pub steps: Value,
    /// Named values from `set` steps.
    pub vars: Value,
    /// The workflow's parameters.
    pub params: Value,
    /// `{id, started_at}`.
    pub run: Value,
    /// `{id, timezone}`.
    pub account: Value,
}

/// A compile error with its place in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// What is wrong, with a hint where we know one.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{} (line {l}, column {c})", self.message),
            (Some(l), None) => write!(f, "{} (line {l})", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// A compiled script with its source (to name what it read when it fails).
#[derive(Debug)]
pub struct CompiledScript {
    ast: AST,
    source: String,
}

/// A compiled script, shareable across threads.
pub type Script = Arc<CompiledScript>;

/// The shared, sandboxed engine. Build one and share it (`Arc`): `Engine` is `Send + Sync`.
#[derive(Debug)]
pub struct ExprEngine {
    engine: Engine,
}

impl Default for ExprEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl ExprEngine {
    /// The sandbox: a raw engine with only pure packages, and hard limits.
    pub fn new() -> Self {
        let mut engine = Engine::new_raw();
        CorePackage::new().register_into_engine(&mut engine);
        LogicPackage::new().register_into_engine(&mut engine);
        BasicStringPackage::new().register_into_engine(&mut engine);
        MoreStringPackage::new().register_into_engine(&mut engine);
        BasicMathPackage::new().register_into_engine(&mut engine);
        BasicArrayPackage::new().register_into_engine(&mut engine);
        BasicMapPackage::new().register_into_engine(&mut engine);
        engine
            .set_max_operations(100_000)
            .set_max_call_levels(16)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(64 * 1024)
            .set_max_array_size(10_000)
            .set_max_map_size(10_000)
            .set_allow_anonymous_fn(false)
            .set_strict_variables(true);
        engine.disable_symbol("eval");
        engine.disable_symbol("print");
        engine.disable_symbol("debug");
        Self { engine }
    }

    fn compile_scope() -> Scope<'static> {
        let mut scope = Scope::new();
        for name in SCOPE_NAMES {
            scope.push(name, Dynamic::UNIT);
        }
        scope
    }

    /// Compiles a script (conditions, `set` values, `match` filters). Its value is the value of
    /// its last expression.
    pub fn compile_script(&self, source: &str) -> Result<Script, CompileError> {
        self.engine
            .compile_with_scope(&Self::compile_scope(), source)
            .map(|ast| Arc::new(CompiledScript { ast, source: source.to_string() }))
            .map_err(compile_error)
    }

    /// Compiles one `{{ … }}` expression.
    pub fn compile_expression(&self, source: &str) -> Result<Script, CompileError> {
        self.engine
            .compile_expression_with_scope(&Self::compile_scope(), source)
            .map(|ast| Arc::new(CompiledScript { ast, source: source.to_string() }))
            .map_err(compile_error)
    }

    /// Evaluates a compiled script against the scope, as JSON.
    pub fn eval(&self, script: &CompiledScript, data: &ScopeData) -> Result<Value, String> {
        let mut scope = Scope::new();
        for (name, value) in SCOPE_NAMES.iter().zip([&data.event, &data.steps, &data.vars, &data.params, &data.run, &data.account]) {
            let dynamic = rhai::serde::to_dynamic(value).map_err(|e| e.to_string())?;
            // `push`, not `push_constant`: constants are folded into the AST by the optimizer.
            scope.push(*name, dynamic);
        }
        let out: Dynamic = self.engine.eval_ast_with_scope(&mut scope, &script.ast).map_err(|e| eval_error(e, &script.source))?;
        rhai::serde::from_dynamic::<Value>(&out).map_err(|e| format!("script result is not JSON: {e}"))
    }

    /// Evaluates a condition: it must give `true` or `false`.
    pub fn eval_bool(&self, script: &CompiledScript, data: &ScopeData) -> Result<bool, String> {
        match self.eval(script, data)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("a condition must give true or false, not {other}")),
        }
    }
}

fn compile_error(err: ParseError) -> CompileError {
    let ParseError(kind, pos) = err;
    let mut message = kind.to_string();
    if let rhai::ParseErrorType::Reserved(word) = kind.as_ref() {
        message = format!("'{word}' is a reserved word in Rhai: write event[\"{word}\"] instead of event.{word}");
    }
    let (line, column) = position(pos);
    CompileError { message, line, column }
}

fn position(pos: Position) -> (Option<usize>, Option<usize>) {
    (pos.line(), pos.position())
}

#[allow(clippy::boxed_local)] // rhai hands errors over boxed
fn eval_error(err: Box<EvalAltResult>, source: &str) -> String {
    match *err {
        EvalAltResult::ErrorTooManyOperations(_) => "script exceeded its operation limit (100000): an endless loop?".to_string(),
        EvalAltResult::ErrorStackOverflow(_) | EvalAltResult::ErrorTooManyModules(_) => "script exceeded its call depth limit".to_string(),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!("script built a value too large: {what}"),
        // A property read on `()`: something before it was not in the data. Rhai says only "a
        // getter is not registered for type '()'"; name the path as written instead.
        EvalAltResult::ErrorDotExpr(ref message, pos) if message.contains("for type '()'") => match path_at(source, pos) {
            Some(path) => missing_path_message(&path),
            None => err.to_string(),
        },
        // A method called on `()` (`event.lead.name.len()` without a name): the path before the
        // method was missing.
        EvalAltResult::ErrorFunctionNotFound(ref signature, pos) if signature.contains("(()") => {
            let method = signature.split(" (").next().unwrap_or_default();
            match path_at(source, pos).and_then(|p| p.strip_suffix(&format!(".{method}")).map(str::to_string)) {
                Some(path) if path.contains('.') || path.contains('[') => missing_path_message(&path),
                _ => err.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// "event.lead.first_name is not in the event", for the path that read `()`.
fn missing_path_message(path: &str) -> String {
    let root = path.split(['.', '[']).next().unwrap_or(path);
    let what = match root {
        "event" => "the event".to_string(),
        "steps" => "the outputs of the steps run so far".to_string(),
        "vars" => "the values set so far".to_string(),
        "params" => "the workflow's parameters".to_string(),
        other => format!("'{other}'"),
    };
    format!("{path} is not in {what}")
}

/// The dotted path (`event.lead.first_name`, `event["call"].status`) around a position of a
/// one-based line and column in `source`.
fn path_at(source: &str, pos: Position) -> Option<String> {
    let line = source.lines().nth(pos.line()?.checked_sub(1)?)?;
    let chars: Vec<char> = line.chars().collect();
    let col = pos.position()?.checked_sub(1)?.min(chars.len().saturating_sub(1));
    let in_path = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '"');
    let mut start = col;
    while start > 0 && in_path(chars[start - 1]) {
        start -= 1;
    }
    let mut end = col;
    while end < chars.len() && in_path(chars[end]) {
        end += 1;
    }
    let path: String = chars[start..end].iter().collect();
    let path = path.trim_matches('.');
    (path.contains('.') || path.contains('[')).then(|| path.to_string())
}

/// A string of `input`, split into literal text and `{{ … }}` expressions.
#[derive(Debug, Clone)]
pub enum Template {
    /// No expression: the string as written.
    Literal(String),
    /// Exactly one `{{ … }}` and nothing else: the value keeps its type.
    Whole(Script),
    /// Text and expressions, rendered into one string.
    Parts(Vec<Part>),
}

/// A piece of a [`Template::Parts`].
#[derive(Debug, Clone)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// An expression whose value is written into the string.
    Expr(Script),
}

impl Template {
    /// Splits and compiles `s`. Errors name the expression's position within `s`.
    pub fn compile(engine: &ExprEngine, s: &str) -> Result<Self, CompileError> {
        if !s.contains("{{") {
            return Ok(Template::Literal(s.to_string()));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(CompileError { message: "'{{' without a closing '}}'".into(), line: None, column: None });
            };
            let source = after[..end].trim();
            if source.is_empty() {
                return Err(CompileError { message: "empty '{{ }}'".into(), line: None, column: None });
            }
            parts.push(Part::Expr(engine.compile_expression(source)?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(match parts.as_slice() {
            [Part::Expr(e)] => Template::Whole(e.clone()),
            _ => Template::Parts(parts),
        })
    }

    /// Renders against the scope.
    pub fn render(&self, engine: &ExprEngine, data: &ScopeData) -> Result<Value, String> {
        match self {
            Template::Literal(s) => Ok(Value::String(s.clone())),
            Template::Whole(e) => engine.eval(e, data),
            Template::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Expr(e) => match engine.eval(e, data)? {
                            Value::String(s) => out.push_str(&s),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Ok(Value::String(out))
            }
        }
    }
}

/// An `input` tree with every string compiled as a [`Template`].
#[derive(Debug, Clone)]
pub enum ValueTemplate {
    /// A non-string JSON value, as written.
    Literal(Value),
    /// A string.
    String(Template),
    /// An array.
    Array(Vec<ValueTemplate>),
    /// An object, in written order.
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    /// Compiles every string in `value`; errors come with their path below `path`.
    pub fn compile(engine: &ExprEngine, value: &Value, path: &str, errors: &mut Vec<(String, CompileError)>) -> Self {
        match value {
            Value::String(s) => match Template::compile(engine, s) {
                Ok(t) => ValueTemplate::String(t),
                Err(e) => {
                    errors.push((path.to_string(), e));
                    ValueTemplate::Literal(Value::Null)
                }
            },
            Value::Array(items) => {
                ValueTemplate::Array(items.iter().enumerate().map(|(i, v)| Self::compile(engine, v, &format!("{path}[{i}]"), errors)).collect())
            }
            Value::Object(map) => {
                ValueTemplate::Object(map.iter().map(|(k, v)| (k.clone(), Self::compile(engine, v, &format!("{path}.{k}"), errors))).collect())
            }
            other => ValueTemplate::Literal(other.clone()),
        }
    }

    /// Renders the tree against the scope.
    pub fn render(&self, engine: &ExprEngine, data: &ScopeData) -> Result<Value, String> {
        Ok(match self {
            ValueTemplate::Literal(v) => v.clone(),
            ValueTemplate::String(t) => t.render(engine, data)?,
            ValueTemplate::Array(items) => Value::Array(items.iter().map(|i| i.render(engine, data)).collect::<Result<_, _>>()?),
            ValueTemplate::Object(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, v) in fields {
                    map.insert(k.clone(), v.render(engine, data)?);
                }
                Value::Object(map)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data() -> ScopeData {
        ScopeData { event: json!({"lead": {"first_name": "Ada", "score": 91}, "call": {"status": "no-answer"}}), ..Default::default() }
    }

    #[test]
    fn whole_expression_keeps_its_type_and_parts_render_to_text() {
        let e = ExprEngine::new();
        let whole = Template::compile(&e, "{{ event.lead.score }}").unwrap();
        assert_eq!(whole.render(&e, &data()).unwrap(), json!(91));
        let parts = Template::compile(&e, "Hi {{ event.lead.first_name }}, {{ event.lead.score + 1 }}!").unwrap();
        assert_eq!(parts.render(&e, &data()).unwrap(), json!("Hi Ada, 92!"));
    }

    #[test]
    fn reserved_words_get_a_hint_and_the_index_form_works() {
        let e = ExprEngine::new();
        let err = e.compile_script("event.call.status == \"x\"").unwrap_err();
        assert!(err.message.contains("event[\"call\"]"), "{err}");
        let ok = e.compile_script("event[\"call\"][\"status\"] == \"no-answer\"").unwrap();
        assert!(e.eval_bool(&ok, &data()).unwrap());
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = ExprEngine::new();
        let err = e.compile_script("let x = 1;\nx +* 2").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.column.is_some());
    }

    #[test]
    fn endless_loop_hits_the_operation_limit() {
        let e = ExprEngine::new();
        let s = e.compile_script("loop { } true").unwrap();
        let err = e.eval_bool(&s, &data()).unwrap_err();
        assert!(err.contains("operation limit"), "{err}");
    }

    #[test]
    fn a_missing_field_is_named_by_its_path() {
        let e = ExprEngine::new();
        for source in ["event.lead.last_name.len()", "\"Hi \" + event.person.first_name"] {
            let s = e.compile_expression(source).unwrap();
            let err = e.eval(&s, &data()).unwrap_err();
            assert!(!err.contains("getter"), "{source}: {err}");
            assert!(err.contains("is not in the event"), "{source}: {err}");
        }
        let s = e.compile_expression("event.person.first_name").unwrap();
        assert_eq!(e.eval(&s, &data()).unwrap_err(), "event.person.first_name is not in the event");
    }

    #[test]
    fn unknown_variables_are_compile_errors() {
        let e = ExprEngine::new();
        assert!(e.compile_script("evnt.lead").is_err());
    }
}
