//! Every action module against a local fake of its vendor (wiremock for HTTP APIs, a real SMTP
//! server process for email): the exact request each vendor receives, its real success and error
//! answers, and how each failure is classified. One test binary for the crate.

mod crm;
mod email_send;
mod http_request;
mod slack_post_message;
mod sms_send;
mod stripe;
mod support;
