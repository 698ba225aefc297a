//! TwiML documents, written with an XML writer (`quick-xml`): text and attributes are escaped
//! by the writer, never concatenated. Every document ends in `<Hangup/>` or `<Redirect>`, so a
//! call is never left without instructions.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    /// `<Say>`.
    Say {
        /// The text.
        text: String,
        /// `voice`.
        voice: Option<String>,
        /// `language`.
        language: Option<String>,
        /// `loop`.
        repeat: u32,
    },
    /// `<Play>`.
    Play {
        /// The audio URL.
        url: String,
        /// `loop`.
        repeat: u32,
    },
    /// `<Pause length>`.
    Pause {
        /// Seconds.
        seconds: u64,
    },
    /// `<Gather>` with its prompt inside.
    Gather {
        /// Where Twilio posts the input.
        action: String,
        /// `dtmf`, `speech` or `dtmf speech`.
        input: String,
        /// `numDigits`.
        num_digits: Option<u32>,
        /// `finishOnKey`.
        finish_on_key: String,
        /// `timeout`, seconds.
        timeout: u64,
        /// `speechTimeout`, for speech input.
        speech_timeout: Option<String>,
        /// `hints`.
        hints: Option<String>,
        /// `language`.
        language: Option<String>,
        /// Said or played inside the gather.
        prompt: Vec<Verb>,
    },
    /// `<Record>`.
    Record {
        /// Where Twilio posts the recording.
        action: String,
        /// `maxLength`, seconds.
        max_length: u64,
        /// `finishOnKey`.
        finish_on_key: String,
        /// `playBeep`.
        play_beep: bool,
    },
    /// `<Dial>` to numbers.
    Dial {
        /// Where Twilio posts the dial's outcome.
        action: String,
        /// `timeout`, seconds.
        timeout: u64,
        /// `callerId`.
        caller_id: Option<String>,
        /// Record the bridged call.
        record: bool,
        /// The numbers (the first to answer wins).
        numbers: Vec<String>,
    },
    /// `<Redirect method="POST">`: ends a document.
    Redirect {
        /// The URL.
        url: String,
    },
    /// `<Hangup/>`: ends a document.
    Hangup,
}

impl Verb {
    /// Whether this verb ends a document.
    pub fn ends(&self) -> bool {
        matches!(self, Verb::Redirect { .. } | Verb::Hangup)
    }
}

/// Writes `verbs` as one TwiML document, adding `<Hangup/>` if they do not end in `<Hangup/>`
/// or `<Redirect>`.
pub fn render(verbs: &[Verb]) -> String {
    let mut writer = Writer::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = write_document(&mut writer, verbs);
    String::from_utf8(writer.into_inner()).unwrap_or_default()
}

fn write_document(w: &mut Writer<Vec<u8>>, verbs: &[Verb]) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("Response").write_inner_content(|w| {
        for verb in verbs {
            write_verb(w, verb)?;
        }
        if !verbs.last().is_some_and(Verb::ends) {
            write_verb(w, &Verb::Hangup)?;
        }
        Ok(())
    })?;
    Ok(())
}

fn write_verb(w: &mut Writer<Vec<u8>>, verb: &Verb) -> std::io::Result<()> {
    match verb {
        Verb::Say { text, voice, language, repeat } => {
            let mut e = w.create_element("Say");
            if let Some(v) = voice {
                e = e.with_attribute(("voice", v.as_str()));
            }
            if let Some(l) = language {
                e = e.with_attribute(("language", l.as_str()));
            }
            if *repeat != 1 {
                e = e.with_attribute(("loop", repeat.to_string().as_str()));
            }
            e.write_text_content(BytesText::new(text))?;
        }
        Verb::Play { url, repeat } => {
            let mut e = w.create_element("Play");
            if *repeat != 1 {
                e = e.with_attribute(("loop", repeat.to_string().as_str()));
            }
            e.write_text_content(BytesText::new(url))?;
        }
        Verb::Pause { seconds } => {
            w.create_element("Pause").with_attribute(("length", seconds.to_string().as_str())).write_empty()?;
        }
        Verb::Gather { action, input, num_digits, finish_on_key, timeout, speech_timeout, hints, language, prompt } => {
            let mut e = w
                .create_element("Gather")
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .with_attribute(("input", input.as_str()))
                .with_attribute(("timeout", timeout.to_string().as_str()))
                .with_attribute(("finishOnKey", finish_on_key.as_str()));
            if let Some(n) = num_digits {
                e = e.with_attribute(("numDigits", n.to_string().as_str()));
            }
            if let Some(s) = speech_timeout {
                e = e.with_attribute(("speechTimeout", s.as_str()));
            }
            if let Some(h) = hints {
                e = e.with_attribute(("hints", h.as_str()));
            }
            if let Some(l) = language {
                e = e.with_attribute(("language", l.as_str()));
            }
            e.write_inner_content(|w| {
                for p in prompt {
                    write_verb(w, p)?;
                }
                Ok(())
            })?;
        }
        Verb::Record { action, max_length, finish_on_key, play_beep } => {
            w.create_element("Record")
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .with_attribute(("maxLength", max_length.to_string().as_str()))
                .with_attribute(("finishOnKey", finish_on_key.as_str()))
                .with_attribute(("playBeep", if *play_beep { "true" } else { "false" }))
                .write_empty()?;
        }
        Verb::Dial { action, timeout, caller_id, record, numbers } => {
            let mut e = w
                .create_element("Dial")
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .with_attribute(("timeout", timeout.to_string().as_str()));
            if let Some(c) = caller_id {
                e = e.with_attribute(("callerId", c.as_str()));
            }
            if *record {
                e = e.with_attribute(("record", "record-from-answer"));
            }
            e.write_inner_content(|w| {
                for n in numbers {
                    w.create_element("Number").write_text_content(BytesText::new(n))?;
                }
                Ok(())
            })?;
        }
        Verb::Redirect { url } => {
            w.create_element("Redirect").with_attribute(("method", "POST")).write_text_content(BytesText::new(url))?;
        }
        Verb::Hangup => {
            w.create_element("Hangup").write_empty()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_escaped_and_always_end_the_call_or_redirect() {
        let doc = render(&[Verb::Say { text: "Tom & Jerry <3 \"quotes\"".into(), voice: Some("alice".into()), language: None, repeat: 1 }]);
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say voice=\"alice\">Tom &amp; Jerry &lt;3 &quot;quotes&quot;</Say><Hangup/></Response>"
        );
        let doc = render(&[
            Verb::Gather {
                action: "https://sb.test/v?node=a&x=1".into(),
                input: "dtmf".into(),
                num_digits: Some(1),
                finish_on_key: "#".into(),
                timeout: 5,
                speech_timeout: None,
                hints: None,
                language: None,
                prompt: vec![Verb::Play { url: "https://x.test/a.mp3".into(), repeat: 2 }],
            },
            Verb::Redirect { url: "https://sb.test/v?node=a".into() },
        ]);
        assert!(doc.ends_with("<Redirect method=\"POST\">https://sb.test/v?node=a</Redirect></Response>"), "{doc}");
        assert!(doc.contains("action=\"https://sb.test/v?node=a&amp;x=1\""), "{doc}");
        assert!(doc.contains("<Play loop=\"2\">https://x.test/a.mp3</Play></Gather>"), "{doc}");
    }
}
