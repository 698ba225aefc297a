//! Voice: scripted calls through Twilio.
//!
//! - [`script`]: voice scripts (nodes, parse, save-time checks).
//! - [`machine`]: the script engine, from one caller answer to the next TwiML document.
//! - [`twiml`]: TwiML written with an XML writer.
//! - [`call`]: the `voice.call` module and [`Calls`], what Twilio's callbacks are answered by.

pub mod answer;
pub mod call;
pub mod machine;
pub mod script;
pub mod twiml;

pub use answer::VoiceAnswer;
pub use call::{CallOutput, CallbackError, Calls, VoiceCall};
