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

/// The names voice scripts read besides [`SCOPE_NAMES`]: what the caller gave so far
/// (`inputs.<node id>`), the call (`call.sid`, `call.from`, …) and, in a gather's `validate`,
/// the `value` just given. `call` is a reserved word in Rhai, so a voice engine
/// ([`ExprEngine::for_voice`]) reads a script's `call` as `voice_call`.
pub const VOICE_NAMES: [&str; 4] = ["inputs", "voice_call", "value", HOURS_NAME];

/// Where `hours("name")` reads the account's business-hour schedules (open or not, by name), in
/// every script: fill [`ScopeData::hours`] when [`CompiledScript::reads_hours`].
pub const HOURS_NAME: &str = "voice_hours";

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
    /// Voice scripts only: what the caller gave so far, by node id.
    pub inputs: Value,
    /// Voice scripts only: `{sid, from, to, direction, answered_by}`.
    pub call: Value,
    /// Voice scripts only: the digits or speech a gather's `validate` checks.
    pub value: Value,
    /// Voice scripts only: whether each of the account's business-hour schedules is open, by
    /// name (`hours("office")` reads it).
    pub hours: Value,
    /// In a `for_each` child run: its item, read by the `as` name, and `item_index`.
    pub item: Option<Item>,
}

/// A `for_each` child run's item as its scripts read it.
#[derive(Debug, Clone)]
pub struct Item {
    /// The `as` name.
    pub name: String,
    /// The item.
    pub value: Value,
    /// Its position in the list (from 0).
    pub index: i64,
}

/// The name a `for_each` child's scripts read its item's position by.
pub const ITEM_INDEX: &str = "item_index";

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

impl CompiledScript {
    /// Whether the script reads business hours (`hours("name")`).
    pub fn reads_hours(&self) -> bool {
        self.source.contains(HOURS_NAME)
    }
}

/// A compiled script, shareable across threads.
pub type Script = Arc<CompiledScript>;

/// The shared, sandboxed engine. Build one and share it (`Arc`): `Engine` is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ExprEngine {
    engine: Arc<Engine>,
    /// Whether scripts may read [`VOICE_NAMES`] (and `call` is rewritten to `voice_call`).
    voice: bool,
    /// A `for_each` body's item name (and then `item_index` too), compiled as known variables.
    item: Option<String>,
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
        Self { engine: Arc::new(engine), voice: false, item: None }
    }

    /// The sandbox for voice scripts: scripts and `{{ … }}` may also read `inputs` and `call`.
    pub fn for_voice() -> Self {
        Self { voice: true, ..Self::new() }
    }

    /// The same engine for the steps of a `for_each`, whose scripts also read the item by its
    /// `as` name and its position as `item_index` (shares the sandbox; cheap).
    pub fn with_item(&self, name: &str) -> Self {
        Self { item: Some(name.to_string()), ..self.clone() }
    }

    fn compile_scope(&self) -> Scope<'static> {
        let mut scope = Scope::new();
        for name in SCOPE_NAMES {
            scope.push(name, Dynamic::UNIT);
        }
        if self.voice {
            for name in VOICE_NAMES {
                scope.push(name, Dynamic::UNIT);
            }
        } else {
            scope.push(HOURS_NAME, Dynamic::UNIT);
        }
        if let Some(item) = &self.item {
            scope.push(item.clone(), Dynamic::UNIT);
            scope.push(ITEM_INDEX, Dynamic::UNIT);
        }
        scope
    }

    /// The source as compiled: `hours("office")` becomes `(voice_hours["office"] ?? false)`, and a voice
    /// script's `call` becomes `voice_call`.
    fn prepare<'a>(&self, source: &'a str) -> std::borrow::Cow<'a, str> {
        rename_call(source, self.voice)
    }

    fn compile_error(&self, err: ParseError) -> CompileError {
        let mut e = compile_error(err);
        if self.voice {
            e.message = e.message.replace("voice_call", "call");
        }
        e
    }

    /// Compiles a script (conditions, `set` values, `match` filters). Its value is the value of
    /// its last expression.
    pub fn compile_script(&self, source: &str) -> Result<Script, CompileError> {
        let prepared = self.prepare(source);
        self.engine
            .compile_with_scope(&self.compile_scope(), &prepared)
            .map(|ast| Arc::new(CompiledScript { ast, source: prepared.into_owned() }))
            .map_err(|e| self.compile_error(e))
    }

    /// Compiles one `{{ … }}` expression.
    pub fn compile_expression(&self, source: &str) -> Result<Script, CompileError> {
        let prepared = self.prepare(source);
        self.engine
            .compile_expression_with_scope(&self.compile_scope(), &prepared)
            .map(|ast| Arc::new(CompiledScript { ast, source: prepared.into_owned() }))
            .map_err(|e| self.compile_error(e))
    }

    /// Evaluates a compiled script against the scope, as JSON.
    pub fn eval(&self, script: &CompiledScript, data: &ScopeData) -> Result<Value, String> {
        let mut scope = Scope::new();
        let values = [&data.event, &data.steps, &data.vars, &data.params, &data.run, &data.account];
        let voice: Vec<(&&str, &Value)> =
            if self.voice { VOICE_NAMES.iter().zip([&data.inputs, &data.call, &data.value, &data.hours]).collect() } else { vec![(&HOURS_NAME, &data.hours)] };
        for (name, value) in SCOPE_NAMES.iter().zip(values).chain(voice) {
            // Only what the script names is converted (a `for_each` child's event may hold the
            // whole list it came from); strict variables made sure it reads nothing else.
            let dynamic = if script.source.contains(*name) { rhai::serde::to_dynamic(value).map_err(|e| e.to_string())? } else { Dynamic::UNIT };
            // `push`, not `push_constant`: constants are folded into the AST by the optimizer.
            scope.push(*name, dynamic);
        }
        if let Some(item) = &data.item {
            scope.push(item.name.clone(), rhai::serde::to_dynamic(&item.value).map_err(|e| e.to_string())?);
            scope.push(ITEM_INDEX, item.index);
        }
        let out: Dynamic = self.engine.eval_ast_with_scope(&mut scope, &script.ast).map_err(|e| {
            let message = eval_error(e, &script.source);
            if self.voice { message.replace("voice_call", "call") } else { message }
        })?;
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
        "inputs" => "what the caller gave so far".to_string(),
        "voice_call" => "the call".to_string(),
        "voice_hours" => "the account's business-hour schedules".to_string(),
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

/// `source` with the identifier `call` (not a property such as `x.call`, not inside a string
/// literal or a comment) renamed `voice_call`: `call` is reserved in Rhai, and voice scripts
/// read the call as `call.from`. Likewise `hours("office")` becomes `(voice_hours["office"] ?? false)` (closed when there is no such schedule),
/// the schedules' states the script's scope carries.
fn rename_call(source: &str, voice: bool) -> std::borrow::Cow<'_, str> {
    let wanted = source.contains("hours") || (voice && source.contains("call"));
    if !wanted {
        return std::borrow::Cow::Borrowed(source);
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len() + 8);
    let mut i = 0;
    let mut last_significant: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' || c == '\'' {
            // A string or character literal, copied as is up to its closing quote.
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if chars[i - 1] == c {
                    break;
                }
            }
            last_significant = Some(c);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(chars[i]);
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut after = i;
            while after < chars.len() && chars[after].is_whitespace() {
                after += 1;
            }
            if voice && word == "call" && last_significant != Some('.') {
                out.push_str("voice_call");
            } else if word == "hours" && last_significant != Some('.') && chars.get(after) == Some(&'(') {
                // `hours("office")` reads the schedule's state: `voice_hours["office"]`.
                let close = chars[after..].iter().position(|c| *c == ')').map(|p| after + p);
                match close {
                    Some(close) => {
                        let inner: String = chars[after + 1..close].iter().collect();
                        // A schedule that does not exist reads as closed.
                        out.push_str(&format!("({HOURS_NAME}[{inner}] ?? false)"));
                        i = close + 1;
                    }
                    None => out.push_str(&word),
                }
            } else {
                out.push_str(&word);
            }
            last_significant = Some('a');
        } else {
            out.push(c);
            if !c.is_whitespace() {
                last_significant = Some(c);
            }
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
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
    fn voice_scripts_read_inputs_and_the_call() {
        let e = ExprEngine::for_voice();
        let data = ScopeData { inputs: json!({"menu": {"digits": "1"}}), call: json!({"answered_by": "human", "from": "+15550001111"}), ..data() };
        let s = e.compile_expression(r#"inputs.menu.digits == "1" && call.answered_by == "human" && call["from"] != "call.x""#).unwrap();
        assert_eq!(e.eval(&s, &data).unwrap(), json!(true));
        let t = Template::compile(&e, "You called from {{ call.from }}; 'call' stays").unwrap();
        assert_eq!(t.render(&e, &data).unwrap(), json!("You called from +15550001111; 'call' stays"));
        assert_eq!(rename_call("x.call + call // call", true), "x.call + voice_call // call");
        assert_eq!(rename_call(r#"hours("office") && !hours ( "shop" )"#, true), r#"(voice_hours["office"] ?? false) && !(voice_hours[ "shop" ] ?? false)"#);
        // Workflow scripts read business hours too.
        let step = ExprEngine::new();
        let s = step.compile_script(r#"hours("office")"#).unwrap();
        assert!(s.reads_hours());
        assert_eq!(step.eval(&s, &ScopeData { hours: json!({"office": false}), ..Default::default() }).unwrap(), json!(false));
        assert_eq!(step.eval(&s, &ScopeData { hours: json!({}), ..Default::default() }).unwrap(), json!(false), "no such schedule: closed");
        let open = ScopeData { hours: json!({"office": true}), ..Default::default() };
        assert_eq!(e.eval(&e.compile_expression(r#"hours("office")"#).unwrap(), &open).unwrap(), json!(true));
        let err = e.eval(&e.compile_expression("call.caller_name.len()").unwrap(), &data).unwrap_err();
        assert_eq!(err, "call.caller_name is not in the call");
        // Step scripts do not know them.
        assert!(ExprEngine::new().compile_expression("inputs.menu").is_err());
    }

    #[test]
    fn unknown_variables_are_compile_errors() {
        let e = ExprEngine::new();
        assert!(e.compile_script("evnt.lead").is_err());
    }
}
