//! `stripe.create_customer`, `stripe.create_invoice_item` and `stripe.create_payment_link`:
//! objects created in the account's Stripe through a `stripe` connection, metered
//! `stripe_request` once per created object.
//!
//! The vendor contract (Stripe's v1 REST API, form-encoded, called with the project's reqwest
//! client rather than async-stripe: see `docs/actions.md`, "Stripe"):
//!
//! - `POST {api_base}/v1/customers` (`email`, `name`, `phone`, `description`, `metadata[k]`),
//!   `POST {api_base}/v1/invoiceitems` (`customer`, `amount`, `currency`, `description`,
//!   `invoice`, `metadata[k]`) and `POST {api_base}/v1/payment_links`
//!   (`line_items[i][price]`, `line_items[i][quantity]`, `after_completion[…]`, `metadata[k]`),
//!   with `Authorization: Bearer <secret key>` and `Idempotency-Key: <the step's key>`: Stripe
//!   answers a repeat of the key with the first answer, so a retry never creates a second object
//!   and delivery is [`Delivery::Idempotent`].
//! - Success is `200` with the object; failure is Stripe's error JSON
//!   `{error: {type, code, decline_code, message, param}}`. 408, 429 and 5xx are retryable with
//!   `Retry-After`, and so is any answer carrying `Stripe-Should-Retry: true` (a 409
//!   `lock_timeout` on a key in use); everything else — `card_error` (402),
//!   `invalid_request_error` (400, 404), `idempotency_error`, authentication (401) — is
//!   permanent. The code is `stripe_<error.code>` (or `stripe_<error.type>`), the message
//!   Stripe's.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use switchboard_integrations::connections::{StripeCredentials, Vault};
use switchboard_integrations::http::read_limited;
use switchboard_integrations::providers::{self, Provider};
use switchboard_integrations::{classify_response, classify_send_error};
use switchboard_runtime::action::{Action, ActionContext, ActionError, Delivery, Done, FailureClass, SandboxSend};
use switchboard_runtime::metering::{Unit, Usage};

/// The unit every created object is metered in.
const UNIT: Unit = Unit::StripeRequest;

/// The most of Stripe's answer read; its objects are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The most line items a payment link takes (Stripe's limit).
const MAX_LINE_ITEMS: usize = 20;

/// What the three modules share: the client, the vault and Stripe's base URL.
#[derive(Debug, Clone)]
struct StripeApi {
    client: reqwest::Client,
    vault: Arc<Vault>,
    api_base: String,
}

impl StripeApi {
    fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String) -> Self {
        Self { client, vault, api_base: api_base.trim_end_matches('/').to_owned() }
    }

    /// `POST {api_base}{path}` with `form`, the step's key as `Idempotency-Key`; the created
    /// object, or the failure envelope.
    async fn create<T: DeserializeOwned>(&self, ctx: &ActionContext, kind: &str, path: &str, form: &[(String, String)]) -> Result<T, ActionError> {
        let connection = ctx.connection.as_ref().ok_or_else(|| ActionError::permanent("missing_connection", format!("{kind} needs a stripe connection")))?;
        let credentials: StripeCredentials = self.vault.open(connection)?;
        let mut response = self
            .client
            .post(format!("{}{path}", self.api_base))
            .bearer_auth(credentials.secret_key.expose_secret())
            .header("Idempotency-Key", &ctx.idempotency_key)
            .timeout(ctx.timeout)
            .form(form)
            .send()
            .await
            .map_err(|e| classify_send_error(&e, Delivery::Idempotent))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = read_limited(&mut response, MAX_ANSWER_BYTES).await.map(|(bytes, _)| bytes);
        if !status.is_success() {
            return Err(stripe_failure(status, &headers, &answer.unwrap_or_default()));
        }
        // The key makes asking again harmless: an unreadable answer is retried, and the retry
        // gets the object Stripe created the first time.
        let answer = answer.map_err(|e| classify_send_error(&e, Delivery::Idempotent))?;
        serde_json::from_slice(&answer)
            .map_err(|e| ActionError::retryable("invalid_response", format!("Stripe answered HTTP {status} with an unreadable object: {e}")))
    }
}

/// Stripe's error JSON.
#[derive(Deserialize)]
struct StripeErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
    param: Option<String>,
}

/// A Stripe failure answer as the failure envelope: the status classifies (with
/// `Retry-After`), `Stripe-Should-Retry: true` makes it retryable, Stripe's error names it.
pub fn stripe_failure(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ActionError {
    let text = String::from_utf8_lossy(body);
    let mut failure =
        classify_response(status, headers, &text).unwrap_or_else(|| ActionError::permanent(format!("http_{}", status.as_u16()), format!("HTTP {status}")));
    if headers.get("stripe-should-retry").and_then(|v| v.to_str().ok()) == Some("true") {
        failure.class = FailureClass::Retryable;
    }
    let Ok(StripeErrorBody { error }) = serde_json::from_slice::<StripeErrorBody>(body) else {
        return failure;
    };
    let kind = error.kind.unwrap_or_else(|| "api_error".to_owned());
    if let Some(code) = error.code.as_deref().or(Some(kind.as_str())).filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        failure.code = format!("stripe_{code}");
    }
    let mut message = format!("stripe {kind} (HTTP {})", status.as_u16());
    if let Some(text) = error.message.filter(|m| !m.trim().is_empty()) {
        message.push_str(&format!(": {}", text.trim()));
    }
    if let Some(decline) = error.decline_code {
        message.push_str(&format!(" (decline code {decline})"));
    }
    if let Some(param) = error.param {
        message.push_str(&format!(" (param {param})"));
    }
    failure.message = message;
    failure
}

/// Adds `metadata[k] = v` for each entry.
fn push_metadata(form: &mut Vec<(String, String)>, metadata: &BTreeMap<String, String>) {
    form.extend(metadata.iter().map(|(k, v)| (format!("metadata[{k}]"), v.clone())));
}

/// Adds `name = value` when there is a value.
fn push_opt(form: &mut Vec<(String, String)>, name: &str, value: &Option<String>) {
    if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        form.push((name.to_owned(), v.to_owned()));
    }
}

/// A stable, Stripe-shaped id for a sandbox send: the same step gets the same.
fn sandbox_id(prefix: &str, idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("{prefix}_sandbox{}", &hex::encode(digest)[..16])
}

/// The sandbox record of a form about to be sent.
fn sandbox(path: &str, form: &[(String, String)], to: Option<String>, output: Value) -> SandboxSend {
    let fields: Map<String, Value> = form.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    SandboxSend { to, rendered: json!({ "method": "POST", "path": path, "form": fields }), output, usage: vec![UNIT.times(1)] }
}

fn check_currency(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err("must be a three-letter ISO currency code, e.g. usd".into())
    }
}

// ---------------------------------------------------------------------------------------------
// stripe.create_customer

/// The `stripe.create_customer` action module.
#[derive(Debug, Clone)]
pub struct StripeCreateCustomer(StripeApi);

impl StripeCreateCustomer {
    /// Creates with `client` (from [`switchboard_integrations::client`]) at `api_base`
    /// (`https://api.stripe.com` in production), opening connections with `vault`.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String) -> Self {
        Self(StripeApi::new(client, vault, api_base))
    }
}

/// The input of `stripe.create_customer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    /// The customer's email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The customer's full name or business name.
    #[serde(default)]
    pub name: Option<String>,
    /// The customer's phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// An arbitrary description.
    #[serde(default)]
    pub description: Option<String>,
    /// Key-value pairs stored on the customer (e.g. the CRM's lead id).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The output of `stripe.create_customer`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CustomerOutput {
    /// Stripe's customer id (`cus_…`).
    pub id: String,
    /// The email Stripe stored.
    #[serde(default)]
    pub email: Option<String>,
    /// The name Stripe stored.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the object lives in live mode (a `sk_live_…` key).
    #[serde(default)]
    pub livemode: bool,
}

fn customer_form(input: &CustomerInput) -> Vec<(String, String)> {
    let mut form = Vec::new();
    push_opt(&mut form, "email", &input.email);
    push_opt(&mut form, "name", &input.name);
    push_opt(&mut form, "phone", &input.phone);
    push_opt(&mut form, "description", &input.description);
    push_metadata(&mut form, &input.metadata);
    form
}

#[async_trait]
impl Action for StripeCreateCustomer {
    const KIND: &'static str = "stripe.create_customer";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Stripe::NAME];
    type Input = CustomerInput;
    type Output = CustomerOutput;

    fn estimate(&self, _input: &CustomerInput) -> Vec<Usage> {
        vec![UNIT.times(1)]
    }

    fn sandbox(&self, ctx: &ActionContext, input: &CustomerInput) -> Result<Option<SandboxSend>, ActionError> {
        let output = json!({ "id": sandbox_id("cus", &ctx.idempotency_key), "email": input.email, "name": input.name, "livemode": false });
        Ok(Some(sandbox("/v1/customers", &customer_form(input), input.email.clone().or_else(|| input.name.clone()), output)))
    }

    async fn execute(&self, ctx: &ActionContext, input: CustomerInput) -> Result<Done<CustomerOutput>, ActionError> {
        let output = self.0.create(ctx, Self::KIND, "/v1/customers", &customer_form(&input)).await?;
        Ok(Done { output, usage: vec![UNIT.times(1)] })
    }
}

// ---------------------------------------------------------------------------------------------
// stripe.create_invoice_item

/// The `stripe.create_invoice_item` action module.
#[derive(Debug, Clone)]
pub struct StripeCreateInvoiceItem(StripeApi);

impl StripeCreateInvoiceItem {
    /// Creates with `client` at `api_base`, opening connections with `vault`.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String) -> Self {
        Self(StripeApi::new(client, vault, api_base))
    }
}

/// The input of `stripe.create_invoice_item`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceItemInput {
    /// The Stripe customer billed (`cus_…`).
    pub customer: String,
    /// The amount in the currency's smallest unit (cents for `usd`); negative for a credit.
    pub amount: i64,
    /// Three-letter ISO currency code, lowercase (e.g. `usd`).
    pub currency: String,
    /// Shown on the invoice.
    #[serde(default)]
    pub description: Option<String>,
    /// A draft invoice to add the item to (`in_…`); else it waits for the customer's next one.
    #[serde(default)]
    pub invoice: Option<String>,
    /// Key-value pairs stored on the item.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The output of `stripe.create_invoice_item`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct InvoiceItemOutput {
    /// Stripe's invoice item id (`ii_…`).
    pub id: String,
    /// The customer billed.
    pub customer: String,
    /// The amount, smallest currency unit.
    pub amount: i64,
    /// The currency.
    pub currency: String,
    /// The invoice it was added to, if any yet.
    #[serde(default)]
    pub invoice: Option<String>,
}

fn invoice_item_form(input: &InvoiceItemInput) -> Result<Vec<(String, String)>, ActionError> {
    let customer = input.customer.trim();
    let currency = input.currency.trim().to_ascii_lowercase();
    let mut problems = Vec::new();
    if customer.is_empty() {
        problems.push("customer: must not be empty".to_owned());
    }
    if let Err(e) = check_currency(&currency) {
        problems.push(format!("currency: {e}"));
    }
    if !problems.is_empty() {
        return Err(ActionError::permanent("invalid_input", problems.join("; ")));
    }
    let mut form = vec![("customer".to_owned(), customer.to_owned()), ("amount".to_owned(), input.amount.to_string()), ("currency".to_owned(), currency)];
    push_opt(&mut form, "description", &input.description);
    push_opt(&mut form, "invoice", &input.invoice);
    push_metadata(&mut form, &input.metadata);
    Ok(form)
}

#[async_trait]
impl Action for StripeCreateInvoiceItem {
    const KIND: &'static str = "stripe.create_invoice_item";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Stripe::NAME];
    type Input = InvoiceItemInput;
    type Output = InvoiceItemOutput;

    /// A literal currency is a three-letter code.
    fn validate(&self, input: &Map<String, Value>) -> Vec<(String, String)> {
        match input.get("currency") {
            Some(Value::String(c)) if !c.contains("{{") => check_currency(c.trim()).err().map(|e| ("currency".to_owned(), e)).into_iter().collect(),
            _ => vec![],
        }
    }

    fn estimate(&self, _input: &InvoiceItemInput) -> Vec<Usage> {
        vec![UNIT.times(1)]
    }

    fn sandbox(&self, ctx: &ActionContext, input: &InvoiceItemInput) -> Result<Option<SandboxSend>, ActionError> {
        let form = invoice_item_form(input)?;
        let output = json!({
            "id": sandbox_id("ii", &ctx.idempotency_key),
            "customer": input.customer.trim(),
            "amount": input.amount,
            "currency": input.currency.trim().to_ascii_lowercase(),
            "invoice": input.invoice,
        });
        Ok(Some(sandbox("/v1/invoiceitems", &form, Some(input.customer.trim().to_owned()), output)))
    }

    async fn execute(&self, ctx: &ActionContext, input: InvoiceItemInput) -> Result<Done<InvoiceItemOutput>, ActionError> {
        let form = invoice_item_form(&input)?;
        let output = self.0.create(ctx, Self::KIND, "/v1/invoiceitems", &form).await?;
        Ok(Done { output, usage: vec![UNIT.times(1)] })
    }
}

// ---------------------------------------------------------------------------------------------
// stripe.create_payment_link

/// The `stripe.create_payment_link` action module.
#[derive(Debug, Clone)]
pub struct StripeCreatePaymentLink(StripeApi);

impl StripeCreatePaymentLink {
    /// Creates with `client` at `api_base`, opening connections with `vault`.
    pub fn new(client: reqwest::Client, vault: Arc<Vault>, api_base: String) -> Self {
        Self(StripeApi::new(client, vault, api_base))
    }
}

/// One line of a payment link.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// A Stripe price (`price_…`).
    pub price: String,
    /// How many, at least 1.
    #[serde(default = "one")]
    pub quantity: u32,
}

fn one() -> u32 {
    1
}

/// The input of `stripe.create_payment_link`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentLinkInput {
    /// What is sold: 1 to 20 lines.
    pub line_items: Vec<LineItem>,
    /// Where the payer is sent after paying (`after_completion[type]=redirect`); Stripe's
    /// confirmation page when absent.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Key-value pairs stored on the link (and copied to its payments' sessions).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The output of `stripe.create_payment_link`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PaymentLinkOutput {
    /// Stripe's payment link id (`plink_…`).
    pub id: String,
    /// The URL to send the payer (`https://buy.stripe.com/…`).
    pub url: String,
    /// Whether the link takes payments.
    #[serde(default)]
    pub active: bool,
}

fn payment_link_form(input: &PaymentLinkInput) -> Result<Vec<(String, String)>, ActionError> {
    if input.line_items.is_empty() || input.line_items.len() > MAX_LINE_ITEMS {
        return Err(ActionError::permanent("invalid_input", format!("line_items: must hold 1 to {MAX_LINE_ITEMS} lines")));
    }
    let mut form = Vec::new();
    for (i, line) in input.line_items.iter().enumerate() {
        if line.price.trim().is_empty() || line.quantity == 0 {
            return Err(ActionError::permanent("invalid_input", format!("line_items[{i}]: needs a price and a quantity of at least 1")));
        }
        form.push((format!("line_items[{i}][price]"), line.price.trim().to_owned()));
        form.push((format!("line_items[{i}][quantity]"), line.quantity.to_string()));
    }
    if let Some(url) = input.redirect_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        form.push(("after_completion[type]".to_owned(), "redirect".to_owned()));
        form.push(("after_completion[redirect][url]".to_owned(), url.to_owned()));
    }
    push_metadata(&mut form, &input.metadata);
    Ok(form)
}

#[async_trait]
impl Action for StripeCreatePaymentLink {
    const KIND: &'static str = "stripe.create_payment_link";
    const DELIVERY: Delivery = Delivery::Idempotent;
    const UNITS: &'static [Unit] = &[UNIT];
    const PROVIDERS: &'static [&'static str] = &[providers::Stripe::NAME];
    type Input = PaymentLinkInput;
    type Output = PaymentLinkOutput;

    fn estimate(&self, _input: &PaymentLinkInput) -> Vec<Usage> {
        vec![UNIT.times(1)]
    }

    fn sandbox(&self, ctx: &ActionContext, input: &PaymentLinkInput) -> Result<Option<SandboxSend>, ActionError> {
        let form = payment_link_form(input)?;
        let id = sandbox_id("plink", &ctx.idempotency_key);
        let output = json!({ "id": id, "url": format!("https://buy.stripe.com/sandbox/{id}"), "active": true });
        Ok(Some(sandbox("/v1/payment_links", &form, None, output)))
    }

    async fn execute(&self, ctx: &ActionContext, input: PaymentLinkInput) -> Result<Done<PaymentLinkOutput>, ActionError> {
        let form = payment_link_form(&input)?;
        let output = self.0.create(ctx, Self::KIND, "/v1/payment_links", &form).await?;
        Ok(Done { output, usage: vec![UNIT.times(1)] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_errors_and_invalid_requests_are_permanent_and_named() {
        let headers = HeaderMap::new();
        let body = br#"{"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}"#;
        let err = stripe_failure(StatusCode::PAYMENT_REQUIRED, &headers, body);
        assert_eq!((err.code.as_str(), err.class), ("stripe_card_declined", FailureClass::Permanent));
        assert_eq!(err.message, "stripe card_error (HTTP 402): Your card has insufficient funds. (decline code insufficient_funds)");
        let body = br#"{"error": {"type": "invalid_request_error", "message": "No such customer: 'cus_x'", "param": "customer"}}"#;
        let err = stripe_failure(StatusCode::BAD_REQUEST, &headers, body);
        assert_eq!((err.code.as_str(), err.class), ("stripe_invalid_request_error", FailureClass::Permanent));
        assert!(err.message.ends_with("(param customer)"));
    }

    #[test]
    fn should_retry_makes_a_conflict_retryable() {
        let mut headers = HeaderMap::new();
        headers.insert("stripe-should-retry", "true".parse().unwrap());
        let body = br#"{"error": {"type": "invalid_request_error", "code": "lock_timeout", "message": "This object cannot be accessed right now"}}"#;
        let err = stripe_failure(StatusCode::CONFLICT, &headers, body);
        assert_eq!((err.code.as_str(), err.class), ("stripe_lock_timeout", FailureClass::Retryable));
        let err = stripe_failure(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>");
        assert_eq!((err.code.as_str(), err.class), ("http_502", FailureClass::Retryable));
    }

    #[test]
    fn payment_link_lines_become_indexed_fields() {
        let input: PaymentLinkInput = serde_json::from_value(json!({
            "line_items": [{"price": "price_1", "quantity": 2}, {"price": "price_2"}],
            "redirect_url": "https://example.com/thanks",
        }))
        .unwrap();
        let form = payment_link_form(&input).unwrap();
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("line_items[0][price]", "price_1"),
                ("line_items[0][quantity]", "2"),
                ("line_items[1][price]", "price_2"),
                ("line_items[1][quantity]", "1"),
                ("after_completion[type]", "redirect"),
                ("after_completion[redirect][url]", "https://example.com/thanks"),
            ]
        );
        let empty: PaymentLinkInput = serde_json::from_value(json!({"line_items": []})).unwrap();
        assert_eq!(payment_link_form(&empty).unwrap_err().code, "invalid_input");
    }
}
