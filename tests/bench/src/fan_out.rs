//! Fan-out: one run whose `for_each` starts `--fan-out-items` child runs (each one `log` step),
//! `--fan-out-concurrency` active at once, with the engine's workers running as `serve` does.
//! Measures how long the `for_each` step takes to write its children (one transaction), and
//! children started (and finished) per second until the parent's summary is in.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_runtime::engine::worker;

use super::{Backend, BenchArgs, Figures};

/// A fan-out's figures.
pub(super) struct FanOut {
    /// Children per second, from the run's start to its parent's summary.
    children_per_s: f64,
    /// The whole fan-out, start to end.
    total: Duration,
    /// How many children the summary counted as succeeded.
    succeeded: i64,
}

pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<FanOut> {
    let n = args.fan_out_items;
    let doc = json!({ "name": "fan", "trigger": { "manual": {} }, "steps": [
        { "id": "each", "for_each": {
            "items": "{{ event.items }}", "as": "item", "concurrency": args.fan_out_concurrency, "max_items": 100_000,
            "steps": [{ "id": "note", "action": "log", "input": { "message": "item {{ item_index }}" } }] } }
    ] });
    let row = b.workflow("fan", &doc, "manual", None).await?;
    let items: Vec<Value> = (0..n).map(|i| json!({ "i": i })).collect();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::run(b.engine.clone(), async move {
        let _ = stop_rx.changed().await;
    });
    let job = async {
        let started = Instant::now();
        let run_id = b.engine.start_manual(&row, json!({ "items": items })).await?.run_id;
        loop {
            let run = b.store().run_by_id(&run_id).await?.ok_or_else(|| anyhow::anyhow!("the fan-out run vanished"))?;
            if run.status.is_final() {
                let total = started.elapsed();
                let _ = stop_tx.send(true);
                let summary = b.store().fan_out_summary(&run_id, 1).await?;
                return anyhow::Ok(FanOut { children_per_s: n as f64 / total.as_secs_f64(), total, succeeded: summary.succeeded });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (worked, figures) = tokio::join!(workers, job);
    worked.map_err(|e| anyhow::anyhow!(e))?;
    figures
}

pub(super) fn print(figures: &[Figures], args: &BenchArgs) {
    if figures.iter().all(|f| f.fan_out.is_none()) {
        return;
    }
    println!();
    println!("Fan-out: one for_each over {} items, {} children at a time, each child one log step", args.fan_out_items, args.fan_out_concurrency);
    println!("| backend | children/s | whole fan-out (s) | children succeeded |");
    println!("|---|---|---|---|");
    for f in figures {
        if let Some(o) = &f.fan_out {
            println!("| {} | {:.0} | {:.1} | {} |", f.backend, o.children_per_s, o.total.as_secs_f64(), o.succeeded);
        }
    }
}
