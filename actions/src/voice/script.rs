//! Voice scripts: the nodes a call runs, parsed and checked.
//!
//! A script is a list of nodes. Each node is an object with exactly one node kind as a key
//! (`say`, `play`, `pause`, `gather`, `menu`, `branch`, `record`, `dial`, `request`, `set`,
//! `hangup`), plus an optional `id` and `goto`, which may also be written inside the kind's
//! fields (`{gather: {id: ask, …}}`). `say`, `play`, `pause` and `hangup` take a string as a
//! shorthand for their main field. The same parse serves save time ([`check`], problems with
//! paths such as `script[3].menu.options.2`) and every turn of a call ([`Script::parse`]).
//!
//! Strings are `{{ … }}` templates and `when`/`set`/`validate` are Rhai, both rendered at call
//! time with the voice scope (`inputs`, `call`, besides the run's); they are compiled here once
//! to report mistakes when the workflow is saved.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use switchboard_runtime::expr::{ExprEngine, Template, ValueTemplate};

/// At most this many nodes in a script, and run per call.
pub const MAX_NODES: usize = 1_000;

/// The same node this many times in a row ends the call (`loop_limit`).
pub const MAX_REPEATS: u32 = 10;

/// A `request` node's longest timeout: Twilio waits 15 s for a TwiML answer.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// The node kinds, as written.
pub const KINDS: [&str; 12] = ["say", "play", "pause", "gather", "menu", "branch", "hours", "record", "dial", "request", "set", "hangup"];

/// The goto target that ends the call.
pub const HANGUP: &str = "hangup";

/// A parsed script.
#[derive(Debug, Clone)]
pub struct Script {
    /// The nodes, in order.
    pub nodes: Vec<Node>,
    /// Node index by id.
    pub index: HashMap<String, usize>,
}

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its id, if it has one.
    pub id: Option<String>,
    /// Where to go after it (a node id or `hangup`); the next node by default.
    pub goto: Option<String>,
    /// What it does.
    pub kind: NodeKind,
}

impl Node {
    /// The name the path and the callbacks use: its id, else `#<index>`.
    pub fn key(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("#{index}"))
    }
}

/// A node kind with its fields.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Speak text.
    Say(Say),
    /// Play audio.
    Play(Play),
    /// Silence.
    Pause(Pause),
    /// Collect digits or speech.
    Gather(Gather),
    /// A one-key menu.
    Menu(Menu),
    /// Go to the first arm whose condition holds.
    Branch(Vec<Arm>),
    /// Record the caller.
    Record(Record),
    /// Transfer the caller.
    Dial(Dial),
    /// An HTTP request mid-call.
    Request(Request),
    /// Go one way if a business-hour schedule is open now, another if not.
    Hours(Hours),
    /// Set `vars`.
    Set(BTreeMap<String, String>),
    /// End the call.
    Hangup(Hangup),
}

impl NodeKind {
    /// Whether the node waits on the caller (its TwiML posts back).
    pub fn waits(&self) -> bool {
        matches!(self, NodeKind::Gather(_) | NodeKind::Menu(_) | NodeKind::Record(_) | NodeKind::Dial(_))
    }
}

/// `say`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// The text.
    pub text: String,
    /// A Twilio voice (`alice`, `Polly.Joanna`, …); the step's `voice` by default.
    pub voice: Option<String>,
    /// A language tag (`en-US`); the step's `language` by default.
    pub language: Option<String>,
    /// How many times to say it.
    #[serde(default = "one", rename = "loop")]
    pub repeat: u32,
}

/// `play`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    /// The audio's URL.
    pub url: String,
    /// How many times to play it.
    #[serde(default = "one", rename = "loop")]
    pub repeat: u32,
}

/// `pause`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    /// How long.
    #[serde(default = "one_second", deserialize_with = "seconds")]
    pub length: Duration,
}

/// What a gather or menu asks with: text to say or audio to play.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Say this text.
    Say(String),
    /// Play this URL.
    Play(String),
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match &value {
            Value::String(s) => Ok(Prompt::Say(s.clone())),
            Value::Object(m) if m.len() == 1 => match m.iter().next() {
                Some((k, Value::String(s))) if k == "say" => Ok(Prompt::Say(s.clone())),
                Some((k, Value::String(s))) if k == "play" => Ok(Prompt::Play(s.clone())),
                _ => Err(serde::de::Error::custom("a prompt is text to say, {say: text} or {play: url}")),
            },
            _ => Err(serde::de::Error::custom("a prompt is text to say, {say: text} or {play: url}")),
        }
    }
}

/// `gather`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gather {
    /// `dtmf`, `speech` or `dtmf speech`.
    #[serde(default = "dtmf")]
    pub input: String,
    /// What to ask.
    pub prompt: Prompt,
    /// Digits to collect before posting back (else `finish_on_key` or the timeout ends it).
    pub num_digits: Option<u32>,
    /// The key that ends the input.
    #[serde(default = "hash")]
    pub finish_on_key: String,
    /// How long to wait for input.
    #[serde(default = "five_seconds", deserialize_with = "seconds")]
    pub timeout: Duration,
    /// Speech end-of-input timeout: `auto` or seconds.
    #[serde(default = "auto")]
    pub speech_timeout: String,
    /// Words to expect, comma-separated.
    pub hints: Option<String>,
    /// The speech language.
    pub language: Option<String>,
    /// Rhai over `value` (the digits or speech) that must hold.
    pub validate: Option<String>,
    /// Re-prompts after invalid or no input.
    #[serde(default = "two")]
    pub retries: u32,
    /// What to ask when re-prompting (the prompt by default).
    pub retry_prompt: Option<Prompt>,
    /// Where to go when the retries are spent (the next node by default).
    pub on_empty: Option<String>,
}

/// `menu`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Menu {
    /// What to ask.
    pub prompt: Prompt,
    /// Key → goto.
    pub options: BTreeMap<String, String>,
    /// How long to wait for a key.
    #[serde(default = "five_seconds", deserialize_with = "seconds")]
    pub timeout: Duration,
    /// Re-prompts after an invalid key or none.
    #[serde(default = "two")]
    pub retries: u32,
    /// Said before re-prompting after a key that is not an option.
    pub invalid_prompt: Option<Prompt>,
    /// Said before re-prompting after no key.
    pub no_input_prompt: Option<Prompt>,
    /// Where to go when the retries are spent (the call hangs up by default).
    pub on_fail: Option<String>,
}

/// An arm of `branch`: `{when, goto}`, or `{else: goto}` last.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Rhai that must hold; none for `else`.
    pub when: Option<String>,
    /// Where to go.
    pub goto: Option<String>,
    /// The fallback target.
    #[serde(rename = "else")]
    pub otherwise: Option<String>,
}

/// `hours`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// The schedule's name (`POST /v1/schedules`).
    pub schedule: String,
    /// Where to go when it is open.
    pub open: String,
    /// Where to go when it is closed (or there is no such schedule).
    pub closed: String,
}

/// `record`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Said before the beep.
    pub prompt: Option<Prompt>,
    /// The longest recording.
    #[serde(default = "two_minutes", deserialize_with = "seconds")]
    pub max_length: Duration,
    /// The key that ends the recording.
    #[serde(default = "hash")]
    pub finish_on_key: String,
    /// Whether to beep first.
    #[serde(default = "yes")]
    pub play_beep: bool,
}

/// `dial`'s numbers: one, or up to 10 (the first to answer wins).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Numbers {
    /// One number.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Numbers {
    /// The numbers.
    pub fn list(&self) -> Vec<&str> {
        match self {
            Numbers::One(n) => vec![n.as_str()],
            Numbers::Many(ns) => ns.iter().map(String::as_str).collect(),
        }
    }
}

/// `dial`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dial {
    /// The number(s).
    pub to: Option<Numbers>,
    /// A call queue (not available yet).
    pub queue: Option<String>,
    /// The caller id shown to the callee.
    pub caller_id: Option<String>,
    /// How long to ring.
    #[serde(default = "thirty_seconds", deserialize_with = "seconds")]
    pub timeout: Duration,
    /// Record the transferred call.
    #[serde(default)]
    pub record: bool,
    /// Where to go when nobody answers (the next node by default).
    pub on_no_answer: Option<String>,
}

/// `request`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    #[serde(default = "get")]
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    pub body: Option<Value>,
    /// At most 8 s.
    #[serde(default = "max_request_timeout", deserialize_with = "seconds")]
    pub timeout: Duration,
    /// The answer becomes `vars.<save_as>`.
    pub save_as: String,
    /// Where to go when the request fails (the next node by default, with
    /// `vars.<save_as>.error` set).
    pub on_error: Option<String>,
}

/// `hangup`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hangup {
    /// Said before hanging up.
    pub text: Option<String>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn max_request_timeout() -> Duration {
    MAX_REQUEST_TIMEOUT
}
fn dtmf() -> String {
    "dtmf".into()
}
fn hash() -> String {
    "#".into()
}
fn auto() -> String {
    "auto".into()
}
fn get() -> String {
    "GET".into()
}

/// A duration written as text (`5s`, `2m`) or as whole seconds.
pub fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| serde::de::Error::custom("a duration is whole seconds or text like 5s")),
        Value::String(s) => switchboard_runtime::definition::parse_duration(&s).map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("a duration is whole seconds or text like 5s")),
    }
}

/// The shorthand field of a kind written as a string.
fn shorthand(kind: &str) -> Option<&'static str> {
    match kind {
        "say" => Some("text"),
        "play" => Some("url"),
        "pause" => Some("length"),
        "hangup" => Some("text"),
        _ => None,
    }
}

/// Problems found while parsing, as `(path, message)`.
type Problems = Vec<(String, String)>;

impl Script {
    /// Parses a script; `path` prefixes problem paths (e.g. `script`). Parses what it can and
    /// reports every problem; a script with problems is `Err`.
    pub fn parse(value: &Value, path: &str) -> Result<Script, Problems> {
        let mut problems = Vec::new();
        let Some(items) = value.as_array() else {
            return Err(vec![(path.to_owned(), "must be a list of nodes".to_owned())]);
        };
        if items.is_empty() {
            problems.push((path.to_owned(), "a script needs at least one node".to_owned()));
        }
        if items.len() > MAX_NODES {
            return Err(vec![(path.to_owned(), format!("has {} nodes; a script has at most {MAX_NODES}", items.len()))]);
        }
        let mut nodes = Vec::with_capacity(items.len());
        let mut index = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            if let Some(node) = parse_node(item, &at, &mut problems) {
                if let Some(id) = &node.id
                    && index.insert(id.clone(), i).is_some()
                {
                    problems.push((format!("{at}.id"), format!("'{id}' is the id of an earlier node too; ids are unique in a script")));
                }
                nodes.push(node);
            }
        }
        let script = Script { nodes, index };
        if problems.is_empty() {
            // Targets can only be checked once every id is known.
            script.check_targets(path, &mut problems);
        }
        if problems.is_empty() { Ok(script) } else { Err(problems) }
    }

    /// The index a goto target names, `None` for `hangup`.
    pub fn target(&self, name: &str) -> Option<usize> {
        if name == HANGUP { None } else { self.index.get(name).copied() }
    }

    fn check_targets(&self, path: &str, problems: &mut Problems) {
        let mut check = |at: String, target: &str| {
            if target != HANGUP && !self.index.contains_key(target) {
                let mut known: Vec<&str> = self.index.keys().map(String::as_str).collect();
                known.sort();
                known.push(HANGUP);
                problems.push((at, format!("goes to '{target}', which no node has as its id (known: {})", known.join(", "))));
            }
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let at = format!("{path}[{i}]");
            if let Some(g) = &node.goto {
                check(format!("{at}.goto"), g);
            }
            match &node.kind {
                NodeKind::Gather(g) => {
                    if let Some(t) = &g.on_empty {
                        check(format!("{at}.gather.on_empty"), t);
                    }
                }
                NodeKind::Menu(m) => {
                    for (key, t) in &m.options {
                        check(format!("{at}.menu.options.{key}"), t);
                    }
                    if let Some(t) = &m.on_fail {
                        check(format!("{at}.menu.on_fail"), t);
                    }
                }
                NodeKind::Branch(arms) => {
                    for (j, arm) in arms.iter().enumerate() {
                        if let Some(t) = arm.goto.as_ref().or(arm.otherwise.as_ref()) {
                            check(format!("{at}.branch[{j}]"), t);
                        }
                    }
                }
                NodeKind::Hours(h) => {
                    check(format!("{at}.hours.open"), &h.open);
                    check(format!("{at}.hours.closed"), &h.closed);
                }
                NodeKind::Dial(d) => {
                    if let Some(t) = &d.on_no_answer {
                        check(format!("{at}.dial.on_no_answer"), t);
                    }
                }
                NodeKind::Request(r) => {
                    if let Some(t) = &r.on_error {
                        check(format!("{at}.request.on_error"), t);
                    }
                }
                _ => {}
            }
        }
    }
}

fn parse_node(item: &Value, at: &str, problems: &mut Problems) -> Option<Node> {
    let Some(object) = item.as_object() else {
        problems.push((at.to_owned(), format!("a node is an object with one of {}", KINDS.join(", "))));
        return None;
    };
    let mut kind = None;
    for key in object.keys() {
        if KINDS.contains(&key.as_str()) {
            if let Some(first) = kind {
                problems.push((format!("{at}.{key}"), format!("a node has one kind; this one already is '{first}'")));
                return None;
            }
            kind = Some(key.as_str());
        } else if key != "id" && key != "goto" {
            problems.push((format!("{at}.{key}"), format!("unknown node field; a node has id, goto and one of {}", KINDS.join(", "))));
        }
    }
    let Some(kind) = kind else {
        problems.push((at.to_owned(), format!("a node needs one of {}", KINDS.join(", "))));
        return None;
    };
    let mut body = match object.get(kind) {
        Some(Value::String(s)) if shorthand(kind).is_some() => {
            let mut m = Map::new();
            m.insert(shorthand(kind).unwrap_or_default().to_owned(), Value::String(s.clone()));
            Value::Object(m)
        }
        Some(Value::Null) | None if matches!(kind, "hangup" | "record") => Value::Object(Map::new()),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let here = format!("{at}.{kind}");
    // `id` and `goto` may sit beside the kind or inside its fields.
    let mut field = |name: &str, problems: &mut Problems| -> Option<String> {
        let outer = object.get(name);
        let inner = match &mut body {
            Value::Object(m) if kind != "set" => m.remove(name),
            _ => None,
        };
        match (outer, inner) {
            (Some(_), Some(_)) => {
                problems.push((format!("{here}.{name}"), format!("'{name}' is given twice, beside the node kind and inside it")));
                None
            }
            (Some(Value::String(s)), None) => Some(s.clone()),
            (None, Some(Value::String(s))) => Some(s),
            (None, None) => None,
            (Some(_), None) => {
                problems.push((format!("{at}.{name}"), "must be a string".to_owned()));
                None
            }
            (None, Some(_)) => {
                problems.push((format!("{here}.{name}"), "must be a string".to_owned()));
                None
            }
        }
    };
    let id = field("id", problems);
    let goto = field("goto", problems);
    if goto.is_some() && matches!(kind, "branch" | "menu" | "hangup" | "hours") {
        let why = match kind {
            "branch" => "a branch goes where its arms say",
            "hours" => "an hours node goes to open or closed",
            "menu" => "a menu goes where its options say (on_fail when none is pressed)",
            _ => "a hangup ends the call",
        };
        problems.push((format!("{at}.goto"), format!("{why}; goto is not used here")));
    }
    if let Some(id) = &id
        && (id.is_empty() || id == HANGUP || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        problems.push((format!("{at}.id"), "an id is letters, digits, '_' and '-', and not 'hangup'".to_owned()));
    }
    if matches!(kind, "gather" | "menu" | "record") && id.is_none() {
        problems.push((format!("{at}.id"), format!("a {kind} node needs an id: what the caller gives is read as inputs.<id>")));
    }
    let kind = match kind {
        "say" => NodeKind::Say(typed(&body, &here, problems)?),
        "play" => NodeKind::Play(typed(&body, &here, problems)?),
        "pause" => NodeKind::Pause(typed(&body, &here, problems)?),
        "gather" => {
            let g: Gather = typed(&body, &here, problems)?;
            if !matches!(g.input.as_str(), "dtmf" | "speech" | "dtmf speech" | "speech dtmf") {
                problems.push((format!("{here}.input"), "must be dtmf, speech or 'dtmf speech'".to_owned()));
            }
            NodeKind::Gather(g)
        }
        "menu" => {
            let m: Menu = typed(&body, &here, problems)?;
            if m.options.is_empty() {
                problems.push((format!("{here}.options"), "a menu needs at least one option".to_owned()));
            }
            for key in m.options.keys() {
                if !(key.len() == 1 && key.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#')) {
                    problems.push((format!("{here}.options.{key}"), "an option is one key: 0-9, * or #".to_owned()));
                }
            }
            NodeKind::Menu(m)
        }
        "branch" => {
            let arms: Vec<Arm> = typed(&body, &here, problems)?;
            for (j, arm) in arms.iter().enumerate() {
                let ok = match (&arm.when, &arm.goto, &arm.otherwise) {
                    (Some(_), Some(_), None) => true,
                    (None, None, Some(_)) => j + 1 == arms.len(),
                    _ => false,
                };
                if !ok {
                    problems.push((format!("{here}[{j}]"), "an arm is {when, goto}, or {else: <goto>} as the last arm".to_owned()));
                }
            }
            NodeKind::Branch(arms)
        }
        "hours" => NodeKind::Hours(typed(&body, &here, problems)?),
        "record" => NodeKind::Record(typed(&body, &here, problems)?),
        "dial" => {
            let d: Dial = typed(&body, &here, problems)?;
            if d.queue.is_some() {
                problems.push((format!("{here}.queue"), "call queues are not available yet; dial numbers with 'to'".to_owned()));
            }
            match &d.to {
                None => problems.push((format!("{here}.to"), "a dial needs a number, or up to 10".to_owned())),
                Some(n) if n.list().is_empty() || n.list().len() > 10 => problems.push((format!("{here}.to"), "a dial needs a number, or up to 10".to_owned())),
                Some(n) => {
                    for (j, number) in n.list().iter().enumerate() {
                        if !number.contains("{{") && !crate::sms_send::is_e164(number.trim()) {
                            let at = if matches!(n, Numbers::One(_)) { format!("{here}.to") } else { format!("{here}.to[{j}]") };
                            problems.push((at, "must be a phone number in E.164 form, e.g. +15551234567".to_owned()));
                        }
                    }
                }
            }
            NodeKind::Dial(d)
        }
        "request" => {
            let r: Request = typed(&body, &here, problems)?;
            if !matches!(r.method.to_ascii_uppercase().as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                problems.push((format!("{here}.method"), "must be GET, POST, PUT, PATCH or DELETE".to_owned()));
            }
            if r.timeout > MAX_REQUEST_TIMEOUT || r.timeout.is_zero() {
                problems.push((format!("{here}.timeout"), "at most 8s: Twilio waits 15 s for the call's next instructions".to_owned()));
            }
            if r.save_as.is_empty() || !r.save_as.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push((format!("{here}.save_as"), "a name of letters, digits and '_'".to_owned()));
            }
            NodeKind::Request(r)
        }
        "set" => NodeKind::Set(typed(&body, &here, problems)?),
        "hangup" => NodeKind::Hangup(typed(&body, &here, problems)?),
        _ => unreachable!("KINDS lists every kind"),
    };
    Some(Node { id, goto, kind })
}

/// Deserializes a node's fields, naming the field of the first problem.
fn typed<T: DeserializeOwned>(body: &Value, here: &str, problems: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(body) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut sub = e.path().to_string();
            let message = e.into_inner().to_string();
            // An unknown field is named by the struct's path; name the field itself.
            if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                if sub == "." {
                    sub = field.to_owned();
                } else if !sub.ends_with(field) {
                    sub = format!("{sub}.{field}");
                }
            }
            let at = if sub == "." {
                here.to_owned()
            } else if sub.starts_with('[') {
                format!("{here}{sub}")
            } else {
                format!("{here}.{sub}")
            };
            problems.push((at, message));
            None
        }
    }
}

/// Save-time check of a script: its shape, its targets, and every template and Rhai expression
/// compiled with the voice scope. Strings holding `{{ … }}` that are numbers (dial) are checked
/// when the call runs.
pub fn check(value: &Value, path: &str, engine: &ExprEngine) -> Problems {
    let script = match Script::parse(value, path) {
        Ok(s) => s,
        Err(problems) => return problems,
    };
    // Gathered first, compiled after: (path, source).
    let mut templates: Vec<(String, String)> = Vec::new();
    let mut rhai: Vec<(String, String)> = Vec::new();
    let mut bodies: Vec<(String, Value)> = Vec::new();
    let mut template = |at: String, s: &str| templates.push((at, s.to_owned()));
    let prompt = |p: &Prompt| match p {
        Prompt::Say(s) | Prompt::Play(s) => s.clone(),
    };
    for (i, node) in script.nodes.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match &node.kind {
            NodeKind::Say(s) => template(format!("{at}.say.text"), &s.text),
            NodeKind::Play(p) => template(format!("{at}.play.url"), &p.url),
            NodeKind::Pause(_) => {}
            NodeKind::Hours(h) => template(format!("{at}.hours.schedule"), &h.schedule),
            NodeKind::Gather(g) => {
                template(format!("{at}.gather.prompt"), &prompt(&g.prompt));
                if let Some(p) = &g.retry_prompt {
                    template(format!("{at}.gather.retry_prompt"), &prompt(p));
                }
                if let Some(v) = &g.validate {
                    rhai.push((format!("{at}.gather.validate"), v.clone()));
                }
            }
            NodeKind::Menu(m) => {
                for (name, p) in [("prompt", Some(&m.prompt)), ("invalid_prompt", m.invalid_prompt.as_ref()), ("no_input_prompt", m.no_input_prompt.as_ref())] {
                    if let Some(p) = p {
                        template(format!("{at}.menu.{name}"), &prompt(p));
                    }
                }
            }
            NodeKind::Branch(arms) => {
                for (j, arm) in arms.iter().enumerate() {
                    if let Some(w) = &arm.when {
                        rhai.push((format!("{at}.branch[{j}].when"), w.clone()));
                    }
                }
            }
            NodeKind::Record(r) => {
                if let Some(p) = &r.prompt {
                    template(format!("{at}.record.prompt"), &prompt(p));
                }
            }
            NodeKind::Dial(d) => {
                for n in d.to.as_ref().map(Numbers::list).unwrap_or_default() {
                    template(format!("{at}.dial.to"), n);
                }
                if let Some(c) = &d.caller_id {
                    template(format!("{at}.dial.caller_id"), c);
                }
            }
            NodeKind::Request(r) => {
                template(format!("{at}.request.url"), &r.url);
                for (k, v) in &r.headers {
                    template(format!("{at}.request.headers.{k}"), v);
                }
                if let Some(body) = &r.body {
                    bodies.push((format!("{at}.request.body"), body.clone()));
                }
            }
            NodeKind::Set(values) => {
                for (name, source) in values {
                    rhai.push((format!("{at}.set.{name}"), source.clone()));
                }
            }
            NodeKind::Hangup(h) => {
                if let Some(t) = &h.text {
                    template(format!("{at}.hangup.text"), t);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (at, source) in templates {
        if let Err(e) = Template::compile(engine, &source) {
            problems.push((at, e.to_string()));
        }
    }
    for (at, body) in bodies {
        let mut errors = Vec::new();
        ValueTemplate::compile(engine, &body, &at, &mut errors);
        problems.extend(errors.into_iter().map(|(p, e)| (p, e.to_string())));
    }
    for (at, source) in rhai {
        if let Err(e) = engine.compile_script(&source) {
            problems.push((at, e.to_string()));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(script: Value) -> Vec<String> {
        check(&script, "script", &ExprEngine::for_voice()).into_iter().map(|(p, m)| format!("{p}: {m}")).collect()
    }

    #[test]
    fn a_good_script_parses_with_shorthands_and_ids_in_either_place() {
        let script = json!([
            {"say": "Hi {{ event.lead.first_name }}"},
            {"id": "ask", "menu": {"prompt": "Press 1 to keep it, 2 to move it", "options": {"1": "keep", "2": "move"}, "on_fail": "bye"}},
            {"id": "keep", "say": {"text": "Great", "voice": "alice"}, "goto": "hangup"},
            {"gather": {"id": "move", "input": "speech", "prompt": {"play": "https://x.test/when.mp3"}, "timeout": 7, "validate": "value.len() > 2"}},
            {"branch": [{"when": "inputs.move.speech == \"never\" && call.answered_by == \"human\"", "goto": "bye"}, {"else": "note"}]},
            {"id": "note", "record": {"max_length": "30s"}},
            {"set": {"tries": "1 + 1"}},
            {"dial": {"to": ["+15550001111", "{{ params.backup }}"], "on_no_answer": "bye"}},
            {"pause": "2s"},
            {"id": "bye", "hangup": "Goodbye"}
        ]);
        assert_eq!(problems(script.clone()), Vec::<String>::new());
        let parsed = Script::parse(&script, "script").unwrap();
        assert_eq!(parsed.target("keep"), Some(2));
        assert_eq!(parsed.target("hangup"), None);
        assert_eq!(parsed.nodes[3].id.as_deref(), Some("move"));
        assert_eq!(parsed.nodes[0].key(0), "#0");
        let NodeKind::Gather(g) = &parsed.nodes[3].kind else { panic!() };
        assert_eq!((g.timeout, g.retries, g.finish_on_key.as_str()), (Duration::from_secs(7), 2, "#"));
    }

    #[test]
    fn mistakes_are_named_by_path() {
        let found = problems(json!([
            {"say": "x", "play": "y"},
            {"sya": "x"},
            {"id": "m", "menu": {"prompt": "p", "options": {"12": "nowhere"}}},
            {"gather": {"prompt": "p", "input": "keys"}},
            {"say": {"text": "x", "volume": 3}},
            {"pause": {"length": "soon"}},
            {"request": {"url": "https://x.test", "save_as": "r", "timeout": "20s"}},
            {"dial": {"to": "555-1234"}},
            {"hours": {"schedule": "office", "open": "x"}}
        ]));
        let paths: Vec<&str> = found.iter().map(|p| p.split(": ").next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "script[0].say",
                "script[1].sya",
                "script[1]",
                "script[2].menu.options.12",
                "script[3].id",
                "script[3].gather.input",
                "script[4].say.volume",
                "script[5].pause.length",
                "script[6].request.timeout",
                "script[7].dial.to",
                "script[8].hours"
            ],
            // (the missing `closed` of the hours node)
            "{found:#?}"
        );
    }

    #[test]
    fn targets_rhai_and_templates_are_checked() {
        let found = problems(json!([
            {"id": "m", "menu": {"prompt": "Hi {{ event.lead.name", "options": {"1": "nowhere", "2": "hangup"}}},
            {"branch": [{"when": "inputs.m.digits ==", "goto": "m"}, {"else": "m"}]},
            {"set": {"x": "evnt.y"}},
            {"id": "m", "say": "again"}
        ]));
        assert_eq!(found.len(), 1, "a duplicate id stops before targets: {found:#?}");
        assert!(found[0].starts_with("script[3].id: 'm' is the id of an earlier node"), "{found:#?}");
        let found = problems(json!([
            {"id": "m", "menu": {"prompt": "Hi {{ event.lead.name", "options": {"1": "nowhere", "2": "hangup"}}},
        ]));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("script[0].menu.options.1: goes to 'nowhere'"), "{found:#?}");
        let found = problems(json!([
            {"id": "m", "menu": {"prompt": "Hi {{ event.lead.name", "options": {"1": "m"}}},
            {"branch": [{"when": "inputs.m.digits ==", "goto": "m"}, {"else": "m"}]},
            {"set": {"x": "evnt.y"}},
        ]));
        let paths: Vec<&str> = found.iter().map(|p| p.split(": ").next().unwrap()).collect();
        assert_eq!(paths, ["script[0].menu.prompt", "script[1].branch[0].when", "script[2].set.x"], "{found:#?}");
    }

    #[test]
    fn nodes_that_choose_their_own_way_refuse_a_goto() {
        let found = problems(json!([
            {"id": "m", "menu": {"prompt": "p", "options": {"1": "m"}}, "goto": "m"},
            {"branch": [{"else": "m"}], "goto": "m"},
            {"hangup": "Bye", "goto": "m"}
        ]));
        let paths: Vec<&str> = found.iter().map(|p| p.split(": ").next().unwrap()).collect();
        assert_eq!(paths, ["script[0].goto", "script[1].goto", "script[2].goto"], "{found:#?}");
    }

    #[test]
    fn size_is_bounded() {
        let big: Vec<Value> = (0..=MAX_NODES).map(|_| json!({"say": "x"})).collect();
        assert_eq!(problems(Value::Array(big)), ["script: has 1001 nodes; a script has at most 1000"]);
        assert_eq!(problems(json!("say hi")), ["script: must be a list of nodes"]);
    }
}
