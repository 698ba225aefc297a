//! Inbound calls as Twilio makes them: `--calls` calls, `--call-concurrency` in flight at once,
//! each a signed "a call comes in" webhook (answered with the IVR's first TwiML, which starts
//! the run) and then two signed gather results (each answered with the next document), through
//! the API in process while the engine's workers run the calls' `voice.answer` steps, as
//! `serve` does. Twilio waits 15 s for each answer.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt;
use serde_json::json;
use switchboard_api::{AppState, router};
use switchboard_integrations::twilio::sign;
use switchboard_runtime::engine::worker;
use switchboard_runtime::store::{ConnectionRow, NumberRow};
use tower::ServiceExt;

use super::{Backend, BenchArgs, Figures, percentiles};

const PUBLIC: &str = "http://bench";
const TOKEN: &str = "bench-auth-token";
const NUMBER: &str = "+15550009999";

/// The latencies of Twilio's requests: (p50, p99, max) in ms.
pub(super) struct CallLatency {
    first: (f64, f64, f64),
    result: (f64, f64, f64),
    calls_per_s: f64,
    failures: usize,
}

/// One request as Twilio sends it, signed; the answer's status and body, and how long it took.
async fn post(app: &axum::Router, path: &str, params: &[(String, String)]) -> (bool, String, f64) {
    let signature = sign(TOKEN, &format!("{PUBLIC}{path}"), params);
    let body = serde_urlencoded::to_string(params).unwrap_or_default();
    let request = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(Body::from(body))
        .expect("a request");
    let started = Instant::now();
    let Ok(response) = app.clone().oneshot(request).await;
    let ok = response.status().is_success();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (ok && text.starts_with("<?xml") && text.ends_with("</Response>"), text, ms)
}

/// The path the document's `<Redirect>` (its node's result) posts to.
fn next_path(twiml: &str) -> Option<String> {
    let start = twiml.find("<Redirect method=\"POST\">")? + "<Redirect method=\"POST\">".len();
    let end = twiml[start..].find("</Redirect>")? + start;
    Some(twiml[start..end].strip_prefix(PUBLIC)?.replace("&amp;", "&"))
}

pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<CallLatency> {
    let connection_id = switchboard_runtime::engine::new_id();
    let credentials = json!({ "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": TOKEN });
    let sealed = hex::encode(b.vault.seal(&connection_id, &credentials));
    let connection = ConnectionRow {
        id: connection_id.clone(),
        account_id: "bench".into(),
        provider: "twilio".into(),
        name: "main".into(),
        sandbox: 0,
        sealed,
        created_at: b.now(),
        settings: "{}".into(),
        status: "ok".into(),
    };
    b.store().create_connection(&connection).await?;
    let ivr = json!({ "name": "line", "trigger": { "call": {} }, "steps": [
        { "id": "answer", "action": "voice.answer", "input": { "script": [
            { "say": "Welcome to Studio Ada." },
            { "id": "menu", "menu": { "prompt": "For billing press 1, for support press 2.", "options": { "1": "account", "2": "account" } } },
            { "id": "account", "gather": { "prompt": "Enter your four-digit account number.", "num_digits": 4, "validate": "value.len() == 4" } },
            { "say": "Thank you. Your account {{ inputs.account.digits }} is in good standing." },
            { "hangup": "Goodbye." }
        ] } }
    ] });
    let workflow = b.workflow("line", &ivr, "call", None).await?;
    let number = NumberRow {
        id: switchboard_runtime::engine::new_id(),
        account_id: "bench".into(),
        connection_id: connection_id.clone(),
        number: NUMBER.into(),
        workflow_id: workflow.id.clone(),
        created_at: b.now(),
    };
    b.store().create_number(&number).await?;
    let app = router(AppState::new(b.engine.clone(), b.vault.clone(), "unused", PUBLIC));
    let incoming = format!("/callbacks/twilio/{connection_id}/voice");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(b.engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let calls = async {
        let started = Instant::now();
        let results: Vec<(Vec<f64>, Vec<f64>, usize)> = futures::stream::iter(0..args.calls)
            .map(|i| {
                let (app, incoming) = (app.clone(), incoming.clone());
                async move {
                    let pairs = |list: &[(&str, String)]| list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>();
                    let sid = format!("CA{i:032x}");
                    let from = format!("+1555{i:07}");
                    let (ok, mut twiml, first) = post(&app, &incoming, &pairs(&[("CallSid", sid.clone()), ("From", from), ("To", NUMBER.into())])).await;
                    let mut failures = usize::from(!ok);
                    let mut results = Vec::new();
                    for digits in ["1", "4321"] {
                        let Some(path) = next_path(&twiml) else {
                            failures += 1;
                            break;
                        };
                        let (ok, next, ms) = post(&app, &path, &pairs(&[("CallSid", sid.clone()), ("Digits", digits.into())])).await;
                        failures += usize::from(!ok);
                        results.push(ms);
                        twiml = next;
                    }
                    (vec![first], results, failures)
                }
            })
            .buffer_unordered(args.call_concurrency)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let _ = stop_tx.send(true);
        (results, elapsed)
    };
    let (worked, (results, elapsed)) = tokio::join!(workers, calls);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    let firsts = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let gathered = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    Ok(CallLatency {
        first: percentiles(firsts),
        result: percentiles(gathered),
        calls_per_s: args.calls as f64 / elapsed.as_secs_f64(),
        failures: results.iter().map(|r| r.2).sum(),
    })
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    if figures.iter().all(|f| f.calls.is_none()) {
        return;
    }
    println!();
    println!("Inbound calls: {} calls, {} at a time (Twilio waits 15 s for each answer)", args.calls, args.call_concurrency);
    println!("| backend | first TwiML p50 / p99 / max (ms) | gather result p50 / p99 / max (ms) | calls/s | failures |");
    println!("|---|---|---|---|---|");
    for f in figures {
        if let Some(c) = &f.calls {
            println!(
                "| {} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.0} | {} |",
                f.backend, c.first.0, c.first.1, c.first.2, c.result.0, c.result.1, c.result.2, c.calls_per_s, c.failures
            );
        }
    }
}
