//! `stripe.*` against a fake Stripe API (wiremock): the exact form-encoded requests with the
//! bearer key and the step's `Idempotency-Key`, Stripe's real objects and error answers, and how
//! each failure is classified.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_actions::stripe::{StripeCreateCustomer, StripeCreateInvoiceItem, StripeCreatePaymentLink};
use switchboard_integrations::HttpConfig;
use switchboard_integrations::connections::Vault;
use switchboard_runtime::action::{ActionError, ConnectionRef, DynAction, FailureClass};
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{connection, ctx, tls, vault};

const KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

fn client() -> reqwest::Client {
    tls();
    switchboard_integrations::client(&HttpConfig { allow_private: true, ..HttpConfig::default() }).unwrap()
}

fn stripe_connection() -> (Arc<Vault>, Arc<ConnectionRef>) {
    let vault = vault();
    let conn = connection(&vault, "stripe", false, json!({"secret_key": KEY, "webhook_secret": "whsec_test"}));
    (vault, conn)
}

async fn run(action: &str, server: &MockServer, input: Value) -> Result<(Value, Vec<(String, i64)>), ActionError> {
    let (vault, conn) = stripe_connection();
    let base = server.uri();
    let module: Box<dyn DynAction> = match action {
        "customer" => Box::new(StripeCreateCustomer::new(client(), vault, base)),
        "invoice_item" => Box::new(StripeCreateInvoiceItem::new(client(), vault, base)),
        _ => Box::new(StripeCreatePaymentLink::new(client(), vault, base)),
    };
    let out = module.execute(&ctx(Duration::from_secs(2), Some(conn)), input).await?;
    Ok((out.output, out.usage.iter().map(|u| (u.unit.to_string(), u.quantity)).collect()))
}

#[tokio::test]
async fn create_customer_sends_the_exact_form_with_the_step_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("idempotency-key", "run_1:3"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("email=ada%40example.com&name=Ada+Lovelace&metadata%5Blead_id%5D=L-42"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cus_NffrFeUfNV2Hib", "object": "customer", "email": "ada@example.com", "name": "Ada Lovelace",
            "livemode": false, "metadata": {"lead_id": "L-42"}, "created": 1680893993
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (output, usage) = run("customer", &server, json!({"email": "ada@example.com", "name": "Ada Lovelace", "metadata": {"lead_id": "L-42"}})).await.unwrap();
    assert_eq!(output, json!({"id": "cus_NffrFeUfNV2Hib", "email": "ada@example.com", "name": "Ada Lovelace", "livemode": false}));
    assert_eq!(usage, [("stripe_request".to_owned(), 1)]);
}

#[tokio::test]
async fn create_invoice_item_and_payment_link_send_stripes_fields() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/invoiceitems"))
        .and(header("idempotency-key", "run_1:3"))
        .and(body_string("customer=cus_1&amount=2500&currency=usd&description=Setup+fee"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "ii_1MtGUtLkdIwHu7ixBYwjAM00", "object": "invoiceitem", "customer": "cus_1", "amount": 2500, "currency": "usd",
            "invoice": null, "description": "Setup fee"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_links"))
        .and(header("idempotency-key", "run_1:3"))
        .and(body_string(
            "line_items%5B0%5D%5Bprice%5D=price_1MoC3TLkdIwHu7ixcIbKelAC&line_items%5B0%5D%5Bquantity%5D=2\
             &after_completion%5Btype%5D=redirect&after_completion%5Bredirect%5D%5Burl%5D=https%3A%2F%2Fexample.com%2Fthanks",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "plink_1MoC3ULkdIwHu7ixZjtGpVl2", "object": "payment_link", "active": true,
            "url": "https://buy.stripe.com/test_cN25nr0iZ7bUa7meUY"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let (output, _) = run("invoice_item", &server, json!({"customer": "cus_1", "amount": 2500, "currency": "USD", "description": "Setup fee"})).await.unwrap();
    assert_eq!(output, json!({"id": "ii_1MtGUtLkdIwHu7ixBYwjAM00", "customer": "cus_1", "amount": 2500, "currency": "usd", "invoice": null}));
    let input = json!({"line_items": [{"price": "price_1MoC3TLkdIwHu7ixcIbKelAC", "quantity": 2}], "redirect_url": "https://example.com/thanks"});
    let (output, usage) = run("payment_link", &server, input).await.unwrap();
    assert_eq!(output, json!({"id": "plink_1MoC3ULkdIwHu7ixZjtGpVl2", "url": "https://buy.stripe.com/test_cN25nr0iZ7bUa7meUY", "active": true}));
    assert_eq!(usage, [("stripe_request".to_owned(), 1)]);
}

#[tokio::test]
async fn card_errors_and_invalid_requests_fail_for_good() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined."
        }})))
        .mount(&server)
        .await;
    Mock::given(path("/v1/invoiceitems"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "resource_missing", "param": "customer", "message": "No such customer: 'cus_nope'"
        }})))
        .mount(&server)
        .await;
    let err = run("customer", &server, json!({"email": "a@b.co"})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("stripe_card_declined", FailureClass::Permanent));
    assert!(err.message.contains("Your card was declined."));
    let err = run("invoice_item", &server, json!({"customer": "cus_nope", "amount": 1, "currency": "usd"})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("stripe_resource_missing", FailureClass::Permanent));
    assert_eq!(err.message, "stripe invalid_request_error (HTTP 400): No such customer: 'cus_nope' (param customer)");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_after_what_stripe_says() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7").set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"
        }})))
        .mount(&server)
        .await;
    Mock::given(path("/v1/payment_links"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"type": "api_error", "message": "Something went wrong"}})))
        .mount(&server)
        .await;
    let err = run("customer", &server, json!({})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class, err.retry_after_ms), ("stripe_rate_limit", FailureClass::Retryable, Some(7000)));
    let err = run("payment_link", &server, json!({"line_items": [{"price": "price_1"}]})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("stripe_api_error", FailureClass::Retryable));
}

#[tokio::test]
async fn a_timeout_is_retried_because_the_key_makes_a_resend_harmless() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/customers")).respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5))).mount(&server).await;
    let err = run("customer", &server, json!({"email": "a@b.co"})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("timeout", FailureClass::Retryable));
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let err = run("invoice_item", &server, json!({"customer": "cus_1", "amount": 5, "currency": "dollars"})).await.unwrap_err();
    assert_eq!((err.code.as_str(), err.class), ("invalid_input", FailureClass::Permanent));
    let err = run("payment_link", &server, json!({"line_items": [{"price": "price_1", "quantity": 0}]})).await.unwrap_err();
    assert_eq!(err.code, "invalid_input");
}
