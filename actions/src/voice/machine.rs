//! The script engine: runs a voice script's nodes until one waits on the caller, and writes
//! what ran as one TwiML document. Where the call is ([`CallState`]) is plain data, saved in the
//! store after every turn, so any process can take the next callback.
//!
//! A turn is: the caller's answer to the node awaited ([`Machine::answer`]), then
//! [`Machine::run`] until the document is complete. A `request` node needs I/O, which the
//! machine does not do: `run` hands it out ([`Flow::Request`]) and the driver gives the result
//! back ([`Machine::request_done`]) — a real call performs it, the sandbox does not.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use switchboard_runtime::expr::{ExprEngine, ScopeData, Template, ValueTemplate};

use super::script::{HANGUP, MAX_NODES, MAX_REPEATS, Node, NodeKind, Prompt, Script};
use super::twiml::Verb;

/// Where a call is in its script.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallState {
    /// The first document was answered.
    #[serde(default)]
    pub started: bool,
    /// The node to run next.
    #[serde(default)]
    pub next: usize,
    /// The node whose answer the call waits for.
    #[serde(default)]
    pub awaiting: Option<usize>,
    /// Re-prompts used on the node at `next`.
    #[serde(default)]
    pub tries: u32,
    /// Why the next visit re-prompts: `invalid`, `no_input`, or none.
    #[serde(default)]
    pub reprompt: Option<String>,
    /// What the caller gave, by node id.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Values `set` and `request` nodes made (over the run's `vars`).
    #[serde(default)]
    pub vars: Map<String, Value>,
    /// The nodes run, in order.
    #[serde(default)]
    pub path: Vec<String>,
    /// How many nodes ran.
    #[serde(default)]
    pub nodes_run: u32,
    /// The node run last and how many times in a row.
    #[serde(default)]
    pub last: Option<usize>,
    /// See `last`.
    #[serde(default)]
    pub repeats: u32,
    /// Why the script ended: `hangup` (a hangup node or goto), `end` (past the last node),
    /// `no_option` (a menu's retries spent without `on_fail`), `loop_limit`, `node_limit`.
    #[serde(default)]
    pub ended: Option<String>,
    /// Problems met on the way (a template that could not render, a failed request), each
    /// `{node, message}`. The call goes on.
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// What [`Machine::run`] stopped at.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    /// The document is complete: render the verbs.
    Document,
    /// A `request` node (at `node`) needs this request made; give the result to
    /// [`Machine::request_done`], then run again.
    Request {
        /// The node's index.
        node: usize,
        /// The request, rendered.
        spec: RequestSpec,
    },
}

/// A `request` node's request, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// The method, upper case.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// A JSON body.
    pub body: Option<Value>,
    /// The request's budget.
    pub timeout: Duration,
}

/// A script being run for one call.
pub struct Machine<'a> {
    /// The script.
    pub script: &'a Script,
    /// The voice Rhai engine.
    pub engine: &'a ExprEngine,
    /// The run's scope when the call was placed.
    pub scope: &'a ScopeData,
    /// `{sid, from, to, direction, answered_by}`.
    pub call: Value,
    /// The call's TwiML URL; results post back to it with `?node=<key>`.
    pub callback: String,
    /// The step's default voice.
    pub voice: Option<String>,
    /// The step's default language.
    pub language: Option<String>,
}

/// A form parameter of Twilio's request, non-empty.
pub fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

impl Machine<'_> {
    /// The URL a node's result posts back to.
    pub fn node_url(&self, key: &str) -> String {
        match reqwest::Url::parse_with_params(&self.callback, [("node", key)]) {
            Ok(url) => url.into(),
            Err(_) => self.callback.clone(),
        }
    }

    fn data(&self, state: &CallState, value: Option<&str>) -> ScopeData {
        let mut data = self.scope.clone();
        if !state.vars.is_empty() {
            let mut vars = data.vars.as_object().cloned().unwrap_or_default();
            vars.extend(state.vars.clone());
            data.vars = Value::Object(vars);
        }
        data.inputs = Value::Object(state.inputs.clone());
        data.call = self.call.clone();
        data.value = value.map_or(Value::Null, |v| Value::String(v.to_owned()));
        data
    }

    fn error(&self, state: &mut CallState, index: usize, message: String) {
        let key = self.script.nodes[index].key(index);
        tracing::info!(node = %key, %message, "voice script problem; the call goes on");
        state.errors.push(json!({ "node": key, "message": message }));
    }

    /// A string field rendered; on failure the problem is recorded and the text is empty.
    fn text(&self, state: &mut CallState, index: usize, source: &str) -> String {
        let rendered =
            Template::compile(self.engine, source).map_err(|e| e.to_string()).and_then(|t| t.render(self.engine, &self.data(state, None))).map(|v| match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            });
        rendered.unwrap_or_else(|e| {
            self.error(state, index, e);
            String::new()
        })
    }

    fn eval(&self, state: &CallState, source: &str, value: Option<&str>) -> Result<Value, String> {
        let script = self.engine.compile_script(source).map_err(|e| e.to_string())?;
        self.engine.eval(&script, &self.data(state, value))
    }

    fn prompt(&self, state: &mut CallState, index: usize, prompt: &Prompt) -> Verb {
        match prompt {
            Prompt::Say(text) => Verb::Say { text: self.text(state, index, text), voice: self.voice.clone(), language: self.language.clone(), repeat: 1 },
            Prompt::Play(url) => Verb::Play { url: self.text(state, index, url), repeat: 1 },
        }
    }

    /// Goes to `target` (a node id or `hangup`) after node `index`, or to the next node.
    fn go(&self, state: &mut CallState, index: usize, target: Option<&str>) {
        match target {
            None => state.next = index + 1,
            Some(HANGUP) => state.ended = Some("hangup".into()),
            Some(id) => match self.script.target(id) {
                Some(i) => state.next = i,
                None => {
                    self.error(state, index, format!("goto '{id}': no such node"));
                    state.ended = Some("hangup".into());
                }
            },
        }
    }

    /// Applies the caller's answer (Twilio's form) to the node awaited, named `key`. False when
    /// the call awaits no node of that name (a repeated or stale request): nothing changed.
    pub fn answer(&self, state: &mut CallState, key: &str, params: &[(String, String)]) -> bool {
        let Some(index) = state.awaiting else { return false };
        let node: &Node = &self.script.nodes[index];
        if node.key(index) != key {
            return false;
        }
        state.awaiting = None;
        let id = node.key(index);
        match &node.kind {
            NodeKind::Gather(g) => {
                let digits = param(params, "Digits");
                let speech = param(params, "SpeechResult");
                let valid = match (digits.or(speech), &g.validate) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(value), Some(rule)) => match self.eval(state, rule, Some(value)) {
                        Ok(Value::Bool(b)) => b,
                        Ok(other) => {
                            self.error(state, index, format!("validate gave {other}, not true or false"));
                            false
                        }
                        Err(e) => {
                            self.error(state, index, format!("validate: {e}"));
                            false
                        }
                    },
                };
                if valid {
                    let mut given = Map::new();
                    if let Some(d) = digits {
                        given.insert("digits".into(), json!(d));
                    }
                    if let Some(s) = speech {
                        given.insert("speech".into(), json!(s));
                        if let Some(c) = param(params, "Confidence").and_then(|c| c.parse::<f64>().ok()) {
                            given.insert("confidence".into(), json!(c));
                        }
                    }
                    state.inputs.insert(id, Value::Object(given));
                    state.tries = 0;
                    state.reprompt = None;
                    self.go(state, index, node.goto.as_deref());
                } else if state.tries < g.retries {
                    state.tries += 1;
                    state.reprompt = Some(if digits.or(speech).is_some() { "invalid" } else { "no_input" }.into());
                    state.next = index;
                } else {
                    state.tries = 0;
                    state.reprompt = None;
                    state.inputs.insert(id, json!({}));
                    self.go(state, index, g.on_empty.as_deref());
                }
            }
            NodeKind::Menu(m) => {
                let digits = param(params, "Digits");
                match digits.and_then(|d| m.options.get(d).map(|t| (d, t))) {
                    Some((d, target)) => {
                        state.inputs.insert(id, json!({ "digits": d }));
                        state.tries = 0;
                        state.reprompt = None;
                        let target = target.clone();
                        self.go(state, index, Some(&target));
                    }
                    None if state.tries < m.retries => {
                        state.tries += 1;
                        state.reprompt = Some(if digits.is_some() { "invalid" } else { "no_input" }.into());
                        state.next = index;
                    }
                    None => {
                        state.tries = 0;
                        state.reprompt = None;
                        state.inputs.insert(id, digits.map_or(json!({}), |d| json!({ "digits": d })));
                        match &m.on_fail {
                            Some(t) => {
                                let t = t.clone();
                                self.go(state, index, Some(&t));
                            }
                            None => state.ended = Some("no_option".into()),
                        }
                    }
                }
            }
            NodeKind::Record(_) => {
                let url = param(params, "RecordingUrl");
                let duration = param(params, "RecordingDuration").and_then(|d| d.parse::<i64>().ok()).unwrap_or(0);
                state.inputs.insert(id, json!({ "recording_url": url, "duration_s": duration }));
                self.go(state, index, node.goto.as_deref());
            }
            NodeKind::Dial(d) => {
                let status = param(params, "DialCallStatus").unwrap_or("no-answer").to_owned();
                let duration = param(params, "DialCallDuration").and_then(|d| d.parse::<i64>().ok()).unwrap_or(0);
                state.inputs.insert(id, json!({ "status": status, "duration_s": duration }));
                let answered = matches!(status.as_str(), "completed" | "answered");
                let target = if answered { node.goto.clone() } else { d.on_no_answer.clone().or_else(|| node.goto.clone()) };
                self.go(state, index, target.as_deref());
            }
            _ => return false,
        }
        true
    }

    /// Runs nodes, adding their verbs to `verbs`, until one waits on the caller, the call ends
    /// (the document then ends in `<Hangup/>`), or a request must be made.
    pub fn run(&self, state: &mut CallState, verbs: &mut Vec<Verb>) -> Flow {
        state.started = true;
        loop {
            if let Some(why) = &state.ended {
                if why == "loop_limit" || why == "node_limit" {
                    tracing::info!(%why, "voice script stopped by a guard rail");
                }
                verbs.push(Verb::Hangup);
                return Flow::Document;
            }
            let index = state.next;
            let Some(node) = self.script.nodes.get(index) else {
                state.ended = Some("end".into());
                continue;
            };
            state.nodes_run += 1;
            if state.nodes_run as usize > MAX_NODES {
                state.ended = Some("node_limit".into());
                self.error(state, index, format!("more than {MAX_NODES} nodes ran in this call"));
                continue;
            }
            if state.last == Some(index) {
                state.repeats += 1;
            } else {
                state.last = Some(index);
                state.repeats = 1;
            }
            if state.repeats >= MAX_REPEATS {
                state.ended = Some("loop_limit".into());
                self.error(state, index, format!("this node ran {MAX_REPEATS} times in a row"));
                continue;
            }
            state.path.push(node.key(index));
            let goto = node.goto.as_deref();
            match &node.kind {
                NodeKind::Say(s) => {
                    let text = self.text(state, index, &s.text);
                    let voice = s.voice.clone().or_else(|| self.voice.clone());
                    let language = s.language.clone().or_else(|| self.language.clone());
                    verbs.push(Verb::Say { text, voice, language, repeat: s.repeat });
                    self.go(state, index, goto);
                }
                NodeKind::Play(p) => {
                    let url = self.text(state, index, &p.url);
                    verbs.push(Verb::Play { url, repeat: p.repeat });
                    self.go(state, index, goto);
                }
                NodeKind::Pause(p) => {
                    verbs.push(Verb::Pause { seconds: p.length.as_secs().max(1) });
                    self.go(state, index, goto);
                }
                NodeKind::Gather(g) => {
                    let prompt = match (&state.reprompt, &g.retry_prompt) {
                        (Some(_), Some(retry)) => retry,
                        _ => &g.prompt,
                    };
                    let prompt = vec![self.prompt(state, index, prompt)];
                    let speech = g.input.contains("speech");
                    let url = self.node_url(&node.key(index));
                    verbs.push(Verb::Gather {
                        action: url.clone(),
                        input: g.input.clone(),
                        num_digits: g.num_digits,
                        finish_on_key: g.finish_on_key.clone(),
                        timeout: g.timeout.as_secs().max(1),
                        speech_timeout: speech.then(|| g.speech_timeout.clone()),
                        hints: g.hints.clone(),
                        language: g.language.clone().or_else(|| if speech { self.language.clone() } else { None }),
                        prompt,
                    });
                    verbs.push(Verb::Redirect { url });
                    state.awaiting = Some(index);
                    return Flow::Document;
                }
                NodeKind::Menu(m) => {
                    let mut prompt = Vec::new();
                    let before = match state.reprompt.as_deref() {
                        Some("invalid") => m.invalid_prompt.as_ref(),
                        Some(_) => m.no_input_prompt.as_ref(),
                        None => None,
                    };
                    if let Some(p) = before {
                        prompt.push(self.prompt(state, index, p));
                    }
                    prompt.push(self.prompt(state, index, &m.prompt));
                    let url = self.node_url(&node.key(index));
                    verbs.push(Verb::Gather {
                        action: url.clone(),
                        input: "dtmf".into(),
                        num_digits: Some(1),
                        finish_on_key: String::new(),
                        timeout: m.timeout.as_secs().max(1),
                        speech_timeout: None,
                        hints: None,
                        language: None,
                        prompt,
                    });
                    verbs.push(Verb::Redirect { url });
                    state.awaiting = Some(index);
                    return Flow::Document;
                }
                NodeKind::Record(r) => {
                    if let Some(p) = &r.prompt {
                        let verb = self.prompt(state, index, p);
                        verbs.push(verb);
                    }
                    let url = self.node_url(&node.key(index));
                    verbs.push(Verb::Record {
                        action: url.clone(),
                        max_length: r.max_length.as_secs().max(1),
                        finish_on_key: r.finish_on_key.clone(),
                        play_beep: r.play_beep,
                    });
                    verbs.push(Verb::Redirect { url });
                    state.awaiting = Some(index);
                    return Flow::Document;
                }
                NodeKind::Dial(d) => {
                    let numbers: Vec<String> = d.to.as_ref().map(|n| n.list()).unwrap_or_default().into_iter().map(|n| self.text(state, index, n)).collect();
                    let numbers: Vec<String> = numbers.into_iter().map(|n| n.trim().to_owned()).filter(|n| crate::sms_send::is_e164(n)).collect();
                    if numbers.is_empty() {
                        self.error(state, index, "dial: no number in E.164 form to call".into());
                        state.inputs.insert(node.key(index), json!({ "status": "failed", "duration_s": 0 }));
                        let target = d.on_no_answer.clone().or_else(|| node.goto.clone());
                        self.go(state, index, target.as_deref());
                        continue;
                    }
                    let caller_id = d.caller_id.as_ref().map(|c| self.text(state, index, c)).filter(|c| !c.is_empty());
                    let url = self.node_url(&node.key(index));
                    verbs.push(Verb::Dial { action: url.clone(), timeout: d.timeout.as_secs().max(1), caller_id, record: d.record, numbers });
                    verbs.push(Verb::Redirect { url });
                    state.awaiting = Some(index);
                    return Flow::Document;
                }
                NodeKind::Branch(arms) => {
                    let mut target = None;
                    for arm in arms {
                        match (&arm.when, &arm.goto, &arm.otherwise) {
                            (Some(when), Some(goto), _) => match self.eval(state, when, None) {
                                Ok(Value::Bool(true)) => {
                                    target = Some(goto.clone());
                                    break;
                                }
                                Ok(Value::Bool(false)) => {}
                                Ok(other) => self.error(state, index, format!("'{when}' gave {other}, not true or false")),
                                Err(e) => self.error(state, index, format!("'{when}': {e}")),
                            },
                            (_, _, Some(otherwise)) => {
                                target = Some(otherwise.clone());
                                break;
                            }
                            _ => {}
                        }
                    }
                    self.go(state, index, target.as_deref());
                }
                NodeKind::Hours(h) => {
                    let name = self.text(state, index, &h.schedule);
                    let open = match self.scope.hours.get(&name) {
                        Some(Value::Bool(open)) => *open,
                        _ => {
                            self.error(state, index, format!("no business-hours schedule named '{name}': taken as closed"));
                            false
                        }
                    };
                    let target = if open { h.open.clone() } else { h.closed.clone() };
                    self.go(state, index, Some(&target));
                }
                NodeKind::Set(values) => {
                    for (name, source) in values {
                        match self.eval(state, source, None) {
                            Ok(v) => {
                                state.vars.insert(name.clone(), v);
                            }
                            Err(e) => self.error(state, index, format!("{name}: {e}")),
                        }
                    }
                    self.go(state, index, goto);
                }
                NodeKind::Request(r) => {
                    let data = self.data(state, None);
                    let url = self.text(state, index, &r.url);
                    let headers = r.headers.iter().map(|(k, v)| (k.clone(), self.text(state, index, v))).collect();
                    let body = match &r.body {
                        None => None,
                        Some(body) => {
                            let mut errors = Vec::new();
                            let compiled = ValueTemplate::compile(self.engine, body, "body", &mut errors);
                            match compiled.render(self.engine, &data) {
                                Ok(v) if errors.is_empty() => Some(v),
                                Ok(_) => {
                                    self.error(state, index, format!("body: {}", errors[0].1));
                                    None
                                }
                                Err(e) => {
                                    self.error(state, index, format!("body: {e}"));
                                    None
                                }
                            }
                        }
                    };
                    let spec = RequestSpec { method: r.method.to_ascii_uppercase(), url, headers, body, timeout: r.timeout };
                    return Flow::Request { node: index, spec };
                }
                NodeKind::Hangup(h) => {
                    if let Some(text) = &h.text {
                        let text = self.text(state, index, text);
                        verbs.push(Verb::Say { text, voice: self.voice.clone(), language: self.language.clone(), repeat: 1 });
                    }
                    state.ended = Some("hangup".into());
                }
            }
            if state.reprompt.is_some() && state.next != index {
                state.reprompt = None;
            }
        }
    }

    /// Gives a `request` node (at `index`) its result: the JSON answer becomes
    /// `vars.<save_as>`; a failure sets `vars.<save_as>` to `{error}` and takes `on_error`.
    pub fn request_done(&self, state: &mut CallState, index: usize, result: Result<Value, String>) {
        let Some(Node { kind: NodeKind::Request(r), goto, .. }) = self.script.nodes.get(index) else { return };
        match result {
            Ok(answer) => {
                state.vars.insert(r.save_as.clone(), answer);
                self.go(state, index, goto.as_deref());
            }
            Err(e) => {
                self.error(state, index, format!("request failed: {e}"));
                state.vars.insert(r.save_as.clone(), json!({ "error": e }));
                let target = r.on_error.clone().or_else(|| goto.clone());
                self.go(state, index, target.as_deref());
            }
        }
    }

    /// Runs a whole call without a phone (the sandbox): each node that waits gets the answer
    /// `inputs` gives for its id (`{digits}` or `{speech}`; none: no input; a record gets a
    /// sandbox recording, a dial is answered). Answers every document, in order.
    pub fn simulate(&self, state: &mut CallState, inputs: &Map<String, Value>) -> Vec<String> {
        let mut documents = Vec::new();
        let mut verbs = Vec::new();
        // Each turn runs at least one node, so the node guard bounds this loop.
        loop {
            match self.run(state, &mut verbs) {
                Flow::Request { node, .. } => {
                    self.request_done(state, node, Ok(json!({ "sandbox": true })));
                    continue;
                }
                Flow::Document => documents.push(super::twiml::render(&std::mem::take(&mut verbs))),
            }
            let Some(index) = state.awaiting else { break };
            let node = &self.script.nodes[index];
            let key = node.key(index);
            let given = inputs.get(&key);
            let text = |name: &str| given.and_then(|g| g.get(name)).and_then(Value::as_str).map(str::to_owned);
            let mut params: Vec<(String, String)> = Vec::new();
            match &node.kind {
                NodeKind::Record(_) => {
                    params.push(("RecordingUrl".into(), format!("https://sandbox.switchboard.invalid/recordings/{key}")));
                    params.push(("RecordingDuration".into(), "5".into()));
                }
                NodeKind::Dial(_) => {
                    let status = text("status").unwrap_or_else(|| "completed".into());
                    params.push(("DialCallStatus".into(), status));
                }
                _ => {
                    if let Some(d) = text("digits") {
                        params.push(("Digits".into(), d));
                    }
                    if let Some(s) = text("speech") {
                        params.push(("SpeechResult".into(), s));
                        params.push(("Confidence".into(), "0.9".into()));
                    }
                }
            }
            self.answer(state, &key, &params);
        }
        documents
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn script(v: Value) -> Script {
        Script::parse(&v, "script").unwrap()
    }

    fn machine<'a>(script: &'a Script, engine: &'a ExprEngine, scope: &'a ScopeData) -> Machine<'a> {
        Machine {
            script,
            engine,
            scope,
            call: json!({"sid": "CA1", "from": "+15550001111", "to": "+15552223333", "direction": "outbound-api", "answered_by": "human"}),
            callback: "https://sb.test/callbacks/twilio/voice/tok".into(),
            voice: Some("alice".into()),
            language: None,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn turn(m: &Machine, state: &mut CallState) -> String {
        let mut verbs = Vec::new();
        loop {
            match m.run(state, &mut verbs) {
                Flow::Document => return super::super::twiml::render(&verbs),
                Flow::Request { node, .. } => m.request_done(state, node, Ok(json!({"ok": true}))),
            }
        }
    }

    #[test]
    fn a_menu_reprompts_then_takes_the_chosen_branch() {
        let s = script(json!([
            {"say": "Hi {{ event.lead.first_name }}"},
            {"id": "ask", "menu": {"prompt": "Press 1 to keep it", "options": {"1": "keep", "2": "move"}, "invalid_prompt": "Sorry."}},
            {"id": "move", "say": "Moving", "goto": "hangup"},
            {"id": "keep", "say": "Kept, {{ call.to }} pressed {{ inputs.ask.digits }}"}
        ]));
        let engine = ExprEngine::for_voice();
        let scope = ScopeData { event: json!({"lead": {"first_name": "Ada"}}), ..Default::default() };
        let m = machine(&s, &engine, &scope);
        let mut state = CallState::default();
        let first = turn(&m, &mut state);
        assert!(first.contains("<Say voice=\"alice\">Hi Ada</Say><Gather action=\"https://sb.test/callbacks/twilio/voice/tok?node=ask\""), "{first}");
        assert!(first.ends_with("<Redirect method=\"POST\">https://sb.test/callbacks/twilio/voice/tok?node=ask</Redirect></Response>"), "{first}");
        assert!(!m.answer(&mut state, "other", &form(&[("Digits", "1")])), "an answer for another node changes nothing");
        assert!(m.answer(&mut state, "ask", &form(&[("Digits", "9")])));
        let again = turn(&m, &mut state);
        assert!(again.contains("<Say voice=\"alice\">Sorry.</Say><Say voice=\"alice\">Press 1 to keep it</Say>"), "{again}");
        assert!(m.answer(&mut state, "ask", &form(&[("Digits", "1")])));
        let last = turn(&m, &mut state);
        assert!(last.contains("Kept, +15552223333 pressed 1</Say><Hangup/>"), "{last}");
        assert_eq!(state.path, ["#0", "ask", "ask", "keep"]);
        assert_eq!(state.inputs["ask"], json!({"digits": "1"}));
        assert_eq!(state.ended.as_deref(), Some("end"));
    }

    #[test]
    fn gather_validates_and_gives_up_to_on_empty() {
        let s = script(json!([
            {"id": "zip", "gather": {"prompt": "Your zip?", "num_digits": 5, "validate": "value.len() == 5", "retries": 1, "on_empty": "bye"}},
            {"id": "thanks", "say": "Thanks", "goto": "hangup"},
            {"id": "bye", "hangup": "Bye"}
        ]));
        let engine = ExprEngine::for_voice();
        let scope = ScopeData::default();
        let m = machine(&s, &engine, &scope);
        let mut state = CallState::default();
        turn(&m, &mut state);
        assert!(m.answer(&mut state, "zip", &form(&[("Digits", "12")])));
        turn(&m, &mut state);
        assert!(m.answer(&mut state, "zip", &form(&[])));
        let doc = turn(&m, &mut state);
        assert!(doc.ends_with("<Say voice=\"alice\">Bye</Say><Hangup/></Response>"), "{doc}");
        assert_eq!(state.path, ["zip", "zip", "bye"]);
        assert_eq!(state.inputs["zip"], json!({}));
    }

    #[test]
    fn the_same_node_ten_times_in_a_row_ends_the_call() {
        let s = script(json!([{"id": "m", "menu": {"prompt": "0 to hear this again", "options": {"0": "m"}}}]));
        let engine = ExprEngine::for_voice();
        let scope = ScopeData::default();
        let m = machine(&s, &engine, &scope);
        let mut state = CallState::default();
        let inputs = json!({"m": {"digits": "0"}});
        let documents = m.simulate(&mut state, inputs.as_object().unwrap());
        assert_eq!(state.ended.as_deref(), Some("loop_limit"));
        assert_eq!(documents.len(), 10, "nine menus, then the hang-up");
        assert!(documents.last().unwrap().ends_with("<Response><Hangup/></Response>"));
    }

    #[test]
    fn a_server_side_loop_stops_at_the_node_limit() {
        let s = script(json!([{"id": "a", "set": {"x": "1"}, "goto": "b"}, {"id": "b", "set": {"y": "2"}, "goto": "a"}]));
        let engine = ExprEngine::for_voice();
        let scope = ScopeData::default();
        let m = machine(&s, &engine, &scope);
        let mut state = CallState::default();
        let doc = turn(&m, &mut state);
        assert_eq!(state.ended.as_deref(), Some("node_limit"));
        assert!(doc.ends_with("<Hangup/></Response>"));
        assert_eq!(state.path.len(), MAX_NODES);
    }

    #[test]
    fn hours_nodes_and_hours_in_rhai_read_the_schedules() {
        let s = script(json!([
            {"hours": {"schedule": "office", "open": "open", "closed": "closed"}},
            {"id": "open", "branch": [{"when": "hours(\"shop\")", "goto": "both"}, {"else": "closed"}]},
            {"id": "both", "say": "Both open", "goto": "hangup"},
            {"id": "closed", "say": "Closed"}
        ]));
        let engine = ExprEngine::for_voice();
        for (hours, path) in [
            (json!({"office": true, "shop": true}), vec!["#0", "open", "both"]),
            (json!({"office": true, "shop": false}), vec!["#0", "open", "closed"]),
            (json!({"office": false}), vec!["#0", "closed"]),
            (json!({}), vec!["#0", "closed"]),
        ] {
            let scope = ScopeData { hours: hours.clone(), ..Default::default() };
            let m = machine(&s, &engine, &scope);
            let mut state = CallState::default();
            turn(&m, &mut state);
            assert_eq!(state.path, path, "{hours} {:?}", state.errors);
        }
    }

    #[test]
    fn requests_save_their_answer_and_branches_read_it() {
        let s = script(json!([
            {"request": {"url": "https://api.test/{{ call.to }}", "save_as": "lookup"}},
            {"branch": [{"when": "vars.lookup.ok", "goto": "yes"}, {"else": "no"}]},
            {"id": "yes", "say": "Found", "goto": "hangup"},
            {"id": "no", "say": "Not found"}
        ]));
        let engine = ExprEngine::for_voice();
        let scope = ScopeData { vars: json!({}), ..Default::default() };
        let m = machine(&s, &engine, &scope);
        let mut state = CallState::default();
        let mut verbs = Vec::new();
        let Flow::Request { node, spec } = m.run(&mut state, &mut verbs) else { panic!("a request first") };
        assert_eq!((node, spec.method.as_str(), spec.url.as_str()), (0, "GET", "https://api.test/+15552223333"));
        m.request_done(&mut state, node, Ok(json!({"ok": true})));
        assert_eq!(m.run(&mut state, &mut verbs), Flow::Document);
        assert_eq!(state.path, ["#0", "#1", "yes"]);
    }
}
