//! The real server from outside (`serve`): a `switchboard serve` process of the server binary
//! (`--server-bin`) on the backend's database, its workers on, driven over HTTP only.
//!
//! - Webhook ingest with the workers running: `wrk` (`--serve-connections` connections,
//!   `--serve-threads` threads, `--serve-secs` seconds, `--latency`) POSTs a ~0.5 KB JSON body
//!   to one workflow's `/hooks/{token}`; then the time until every run it started finished.
//! - Steps/s through the server: `--serve-runs` runs of a `--steps`-step workflow, then
//!   `--serve-single-runs` runs of a one-step workflow, posted as fast as
//!   `--serve-connections` concurrent clients can while the workers run, timed from the first
//!   post until every run finished.
//!
//! And, once per bench (not per backend), the references they are compared with
//! ([`references`]): the pgbench ceiling of one ~0.5 KB jsonb insert per transaction on the
//! same PostgreSQL, and graphile-worker draining no-op jobs (`tests/bench/graphile`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_runtime::store::dialect;

use super::procs::WorkerProcess;
use super::{Backend, BenchArgs, Figures};

/// SQLite's ingest bar: requests/s through the real server.
const SQLITE_INGEST_BAR: f64 = 5_000.0;
/// PostgreSQL's ingest bar: this share of the pgbench ceiling.
const POSTGRES_INGEST_BAR: f64 = 0.5;
/// Steps/s bars, as multiples of graphile-worker's jobs/s: (multi-step runs, one-step runs).
const SQLITE_STEPS_BARS: (f64, f64) = (1.5, 1.0);
const POSTGRES_STEPS_BARS: (f64, f64) = (2.0, 1.5);

/// What one backend's server measured.
pub(super) struct Serve {
    /// `None`: wrk is not installed.
    ingest: Option<Ingest>,
    /// Multi-step runs (`--steps` steps each), then one-step runs.
    multi: Steps,
    single: Steps,
}

/// wrk's figures, and the drain after it.
struct Ingest {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Answers by status, counted by the wrk script.
    statuses: BTreeMap<u16, u64>,
    /// wrk's own "Non-2xx or 3xx responses".
    non_2xx_3xx: u64,
    /// wrk's socket errors: connect, read, write, timeout.
    socket_errors: [u64; 4],
    /// Runs of the ingest workflow, all finished.
    runs: i64,
    /// From wrk's end until every run finished.
    drain: Duration,
}

impl Ingest {
    /// Answers other than 202, socket errors included.
    fn not_202(&self) -> u64 {
        self.statuses.iter().filter(|(s, _)| **s != 202).map(|(_, n)| n).sum::<u64>() + self.socket_errors.iter().sum::<u64>()
    }
}

/// One steps/s figure.
struct Steps {
    runs: usize,
    steps: usize,
    /// Answers by status (0: the request failed).
    statuses: BTreeMap<u16, u64>,
    /// Posting every webhook.
    posted: Duration,
    /// From the first post until every accepted run finished.
    elapsed: Duration,
    succeeded: i64,
}

impl Steps {
    fn accepted(&self) -> u64 {
        self.statuses.get(&202).copied().unwrap_or(0)
    }

    /// Steps of the accepted runs per second.
    fn steps_per_sec(&self) -> f64 {
        (self.accepted() as f64 * self.steps as f64) / self.elapsed.as_secs_f64()
    }
}

/// A running `switchboard serve` and what the bench made in it.
struct Server {
    process: WorkerProcess,
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts `switchboard serve` on `database_url` (data dir `dir`, warnings only in its log)
    /// and waits until `/readyz` answers 200.
    async fn start(exe: &Path, database_url: &str, dir: &Path, args: &BenchArgs) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let base = format!("http://127.0.0.1:{port}");
        let admin = format!("adm_{}", uuid::Uuid::new_v4().simple());
        let env = [
            ("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}")),
            ("SWITCHBOARD_PUBLIC_URL", base.clone()),
            ("SWITCHBOARD_ADMIN_TOKEN", admin.clone()),
            // High enough never to answer 429 to the load (0 would turn the limiter off, and
            // with it the limiter's cost, which production pays).
            ("SWITCHBOARD_WEBHOOK_RATE_LIMIT", args.serve_rate_limit.to_string()),
        ];
        let mut process = WorkerProcess::spawn_command(exe, "serve", database_url, dir, "warn", &env)?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(args.serve_connections).build()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(res) = http.get(format!("{base}/readyz")).send().await
                && res.status() == 200
            {
                break;
            }
            process.check_alive()?;
            anyhow::ensure!(Instant::now() < deadline, "switchboard serve did not get ready within 60 s:\n{}", process.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { process, base, admin, http })
    }

    /// Creates an enterprise account (no plan limit in the way) with the admin token; returns
    /// its API key.
    async fn account(&self) -> anyhow::Result<String> {
        let res = self
            .http
            .post(format!("{}/v1/accounts", self.base))
            .bearer_auth(&self.admin)
            .json(&json!({ "name": "bench serve", "plan": "enterprise" }))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(status == 201, "POST /v1/accounts answered {status}: {body}");
        Ok(body["api_key"].as_str().context("api_key")?.to_string())
    }

    /// Creates a webhook workflow of `steps` `log` steps; returns its id and webhook URL.
    async fn workflow(&self, key: &str, name: &str, steps: usize) -> anyhow::Result<(String, String)> {
        let steps: Vec<_> = (0..steps).map(|i| json!({ "id": format!("s{i}"), "action": "log", "input": { "message": "step {{ run.id }}" } })).collect();
        let doc = json!({ "name": name, "trigger": { "webhook": {} }, "steps": steps });
        let res = self.http.post(format!("{}/v1/workflows", self.base)).bearer_auth(key).json(&doc).send().await?;
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(status == 201, "POST /v1/workflows answered {status}: {body}");
        let id = body["id"].as_str().context("workflow id")?.to_string();
        let url = body["webhook_url"].as_str().context("webhook_url")?.to_string();
        Ok((id, url))
    }

    /// Waits until `done` says so, checking every 20 ms that the server still runs.
    async fn wait_until<F, Fut>(&mut self, what: &str, timeout: Duration, mut done: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        while !done().await? {
            self.process.check_alive()?;
            anyhow::ensure!(Instant::now() < deadline, "{what}: not done within {} s", timeout.as_secs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<Serve> {
    let exe = args.server_bin()?;
    let dir = std::env::temp_dir().join(format!("switchboard-bench-serve-{}-{}", std::process::id(), b.name));
    let queued = b.probe.queued().await?;
    if queued > 0 {
        eprintln!("  serve: {queued} runs already queued in the database (of earlier measurements); they are worked too");
    }
    let mut server = match Server::start(&exe, &b.url, &dir, args).await {
        Ok(server) => server,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let result = measure_with(b, args, &mut server, &dir).await;
    if result.is_err() {
        let log = server.process.log();
        let tail: Vec<_> = log.lines().rev().take(20).collect();
        eprintln!("  switchboard serve's log, last lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    server.process.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure_with(b: &Backend, args: &BenchArgs, server: &mut Server, dir: &Path) -> anyhow::Result<Serve> {
    let key = server.account().await?;
    let (multi_id, multi_url) = server.workflow(&key, "serve steps", args.steps).await?;
    let (single_id, single_url) = server.workflow(&key, "serve one step", 1).await?;
    let (ingest_id, ingest_url) = server.workflow(&key, "serve ingest", 1).await?;

    let ingest = if on_path("wrk") {
        let mut ingest = wrk(&ingest_url, dir, args).await?;
        eprintln!("  serve: wrk {:.0} req/s; draining {} accepted runs", ingest.rps, ingest.statuses.get(&202).copied().unwrap_or(0));
        let ended = Instant::now();
        let accepted = ingest.statuses.get(&202).copied().unwrap_or(0) as i64;
        // Accepted runs all finished and the queue empty (a request wrk gave up on may still
        // have started a run).
        let id = ingest_id.as_str();
        server
            .wait_until("draining the ingest runs", Duration::from_secs(1_800), move || async move {
                Ok(b.probe.finished_runs(id).await? >= accepted && b.probe.queued().await? == 0)
            })
            .await?;
        ingest.drain = ended.elapsed();
        ingest.runs = b.probe.finished_runs(&ingest_id).await?;
        Some(ingest)
    } else {
        println!("wrk is not installed: the serve measurement's webhook ingest is skipped (install it: `apt-get install wrk`)");
        None
    };

    let multi = steps(b, args, server, &multi_id, &multi_url, args.serve_runs, args.steps).await?;
    eprintln!("  serve: {} runs x {} steps in {:.2} s", multi.runs, multi.steps, multi.elapsed.as_secs_f64());
    let single = steps(b, args, server, &single_id, &single_url, args.serve_single_runs, 1).await?;
    eprintln!("  serve: {} runs x 1 step in {:.2} s", single.runs, single.elapsed.as_secs_f64());
    Ok(Serve { ingest, multi, single })
}

/// Posts `runs` webhooks to `url` from `--serve-connections` concurrent clients while the
/// server's workers run, and times from the first post until every accepted run finished.
async fn steps(b: &Backend, args: &BenchArgs, server: &mut Server, workflow_id: &str, url: &str, runs: usize, steps: usize) -> anyhow::Result<Steps> {
    let body = super::throughput::lead_body();
    let http = server.http.clone();
    let started = Instant::now();
    let answers: Vec<u16> = futures::stream::iter(0..runs)
        .map(|_| {
            let req = http.post(url).header("content-type", "application/json").body(body.clone());
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(args.serve_connections)
        .collect()
        .await;
    let posted = started.elapsed();
    let mut statuses = BTreeMap::new();
    for status in answers {
        *statuses.entry(status).or_insert(0u64) += 1;
    }
    let accepted = statuses.get(&202).copied().unwrap_or(0) as i64;
    server
        .wait_until(&format!("{runs} runs of {steps} steps"), Duration::from_secs(1_800), move || async move {
            Ok(b.probe.finished_runs(workflow_id).await? >= accepted)
        })
        .await?;
    let elapsed = started.elapsed();
    let succeeded = b.probe.succeeded_runs(workflow_id).await?;
    Ok(Steps { runs, steps, statuses, posted, elapsed, succeeded })
}

/// The wrk script: POSTs the lead body as JSON, counts the answers by status in each thread,
/// and prints one `SWITCHBOARD_BENCH {json}` line with the totals at the end.
fn wrk_script() -> String {
    let body = super::throughput::lead_body();
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {{}}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {{}}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'SWITCHBOARD_BENCH {{"requests":%d,"duration_us":%d,"p50_us":%.0f,"p99_us":%.0f,"socket_errors":[%d,%d,%d,%d],"statuses":{{%s}}}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
"#
    )
}

/// Runs wrk against `url`; parses its summary and the script's line.
async fn wrk(url: &str, dir: &Path, args: &BenchArgs) -> anyhow::Result<Ingest> {
    let script = dir.join("post.lua");
    std::fs::write(&script, wrk_script())?;
    let out = tokio::process::Command::new("wrk")
        .arg("-t")
        .arg(args.serve_threads.to_string())
        .arg("-c")
        .arg(args.serve_connections.to_string())
        .arg("-d")
        .arg(format!("{}s", args.serve_secs))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    parse_wrk(&stdout).with_context(|| format!("wrk's output:\n{stdout}"))
}

fn parse_wrk(stdout: &str) -> anyhow::Result<Ingest> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("SWITCHBOARD_BENCH ")).context("no SWITCHBOARD_BENCH line")?;
    let v: Value = serde_json::from_str(line)?;
    let num = |key: &str| v[key].as_f64().with_context(|| format!("{key} in {line}"));
    let requests = num("requests")? as u64;
    let duration = num("duration_us")? / 1e6;
    let rps = stdout.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|r| r.trim().parse().ok()).unwrap_or(requests as f64 / duration);
    let non_2xx_3xx = stdout.lines().find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    let mut socket_errors = [0; 4];
    for (i, n) in v["socket_errors"].as_array().context("socket_errors")?.iter().enumerate().take(4) {
        socket_errors[i] = n.as_u64().unwrap_or(0);
    }
    let statuses =
        v["statuses"].as_object().context("statuses")?.iter().map(|(s, n)| Ok((s.parse()?, n.as_u64().unwrap_or(0)))).collect::<anyhow::Result<_>>()?;
    Ok(Ingest {
        requests,
        rps,
        p50_ms: num("p50_us")? / 1000.0,
        p99_ms: num("p99_us")? / 1000.0,
        statuses,
        non_2xx_3xx,
        socket_errors,
        runs: 0,
        drain: Duration::ZERO,
    })
}

/// The references, measured once: `Err` says why one was not.
pub(super) struct References {
    pgbench: Result<Pgbench, String>,
    graphile: Result<Graphile, String>,
}

struct Pgbench {
    tps: f64,
}

struct Graphile {
    jobs: u64,
    concurrency: u64,
    seconds: f64,
    jobs_per_sec: f64,
    version: String,
}

/// Measures the pgbench ceiling and graphile-worker's drain on the PostgreSQL server (skipping
/// either, with the reason, when its tools or the server are missing).
pub(super) async fn references(args: &BenchArgs) -> References {
    eprintln!("[{:>5.0} s] references: pgbench", super::elapsed_secs());
    let pgbench = pgbench(args).await;
    eprintln!("[{:>5.0} s] references: graphile-worker", super::elapsed_secs());
    let graphile = graphile(args).await;
    References { pgbench, graphile }
}

/// A fresh scratch database on the PostgreSQL server, dropped after `f`.
async fn with_scratch_database<T, F, Fut>(args: &BenchArgs, what: &str, f: F) -> Result<T, String>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    if args.postgres == "none" {
        return Err("no PostgreSQL (--postgres none)".into());
    }
    let name = format!("switchboard_bench_{what}_{}", std::process::id());
    let url = dialect::create_postgres_database(&args.postgres, &name)
        .await
        .map_err(|e| format!("PostgreSQL at {} unreachable ({e})", switchboard_api::cli::redact(&args.postgres)))?;
    let result = f(url).await.map_err(|e| format!("{e:#}"));
    if let Err(e) = dialect::drop_postgres_database(&args.postgres, &name).await {
        eprintln!("dropping {name}: {e}");
    }
    result
}

/// Runs a command, failing with its output unless it succeeds; returns its stdout.
async fn output(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.stdin(std::process::Stdio::null()).output().await.with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "{what} failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(stdout)
}

/// pgbench's tps of one ~0.5 KB jsonb insert per transaction (`--serve-connections` clients,
/// `--serve-threads` threads, `--pgbench-secs` seconds) into a scratch database's table `t`.
async fn pgbench(args: &BenchArgs) -> Result<Pgbench, String> {
    if !on_path("pgbench") {
        return Err("pgbench is not installed (apt-get install postgresql-client)".into());
    }
    with_scratch_database(args, "pgbench", |url| async move {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-pgbench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let setup = dir.join("setup.sql");
        std::fs::write(&setup, "CREATE TABLE t (id bigserial PRIMARY KEY, body jsonb);\n")?;
        // The body holds no `:` followed by a letter, so pgbench substitutes no variable in it.
        let insert = dir.join("insert.sql");
        std::fs::write(&insert, format!("INSERT INTO t (body) VALUES ('{}');\n", super::throughput::lead_body()))?;
        // pgbench itself makes the table: one transaction of the setup script.
        output(tokio::process::Command::new("pgbench").args(["-n", "-c", "1", "-t", "1", "-f"]).arg(&setup).arg(&url), "pgbench (setup)").await?;
        let stdout = output(
            tokio::process::Command::new("pgbench")
                .arg("-n")
                .arg("-c")
                .arg(args.serve_connections.to_string())
                .arg("-j")
                .arg(args.serve_threads.to_string())
                .arg("-T")
                .arg(args.pgbench_secs.to_string())
                .arg("-f")
                .arg(&insert)
                .arg(&url),
            "pgbench",
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = stdout?;
        let tps = stdout
            .lines()
            .filter(|l| l.contains("without initial connection time"))
            .find_map(|l| l.trim().strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no `tps = … (without initial connection time)` in pgbench's output:\n{stdout}"))?;
        Ok(Pgbench { tps })
    })
    .await
}

/// The folder of the graphile-worker project (`tests/bench/graphile`).
fn graphile_dir(args: &BenchArgs) -> PathBuf {
    args.graphile_dir.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("graphile"))
}

/// graphile-worker's jobs/s: `drain.js` in a scratch database (`npm ci` first if needed).
async fn graphile(args: &BenchArgs) -> Result<Graphile, String> {
    let dir = graphile_dir(args);
    if !on_path("node") || !on_path("npm") {
        return Err(format!(
            "node and npm are not installed: install Node.js 18 or later (e.g. `apt-get install nodejs npm`), then rerun, \
             or run it by hand: `cd {} && npm ci && node drain.js postgres://…/<a fresh database>`",
            dir.display()
        ));
    }
    if !dir.join("node_modules").join("graphile-worker").is_dir() {
        eprintln!("  npm ci in {}", dir.display());
        let install = if dir.join("package-lock.json").is_file() { "ci" } else { "install" };
        output(tokio::process::Command::new("npm").args([install, "--no-audit", "--no-fund"]).current_dir(&dir), &format!("npm {install}"))
            .await
            .map_err(|e| format!("{e:#}"))?;
    }
    with_scratch_database(args, "graphile", |url| async move {
        let stdout = output(
            tokio::process::Command::new("node")
                .arg("drain.js")
                .arg(&url)
                .arg(args.graphile_jobs.to_string())
                .arg(args.graphile_concurrency.to_string())
                .current_dir(&dir),
            "node drain.js",
        )
        .await?;
        let line = stdout.lines().rev().find(|l| l.starts_with('{')).with_context(|| format!("no JSON line in drain.js's output:\n{stdout}"))?;
        let v: Value = serde_json::from_str(line)?;
        Ok(Graphile {
            jobs: v["jobs"].as_u64().context("jobs")?,
            concurrency: v["concurrency"].as_u64().context("concurrency")?,
            seconds: v["seconds"].as_f64().context("seconds")?,
            jobs_per_sec: v["jobs_per_sec"].as_f64().context("jobs_per_sec")?,
            version: v["version"].as_str().unwrap_or("?").to_string(),
        })
    })
    .await
}

/// `ratio` against `bar`, marked.
fn against(ratio: f64, bar: f64) -> String {
    format!("{ratio:.2}x (≥{bar:.1}) {}", if ratio >= bar { "ok" } else { "BELOW" })
}

fn statuses(s: &BTreeMap<u16, u64>) -> String {
    let parts: Vec<_> = s.iter().map(|(status, n)| if *status == 0 { format!("failed={n}") } else { format!("{status}={n}") }).collect();
    if parts.is_empty() { "none".into() } else { parts.join(" ") }
}

pub(super) fn print(figures: &[Figures], refs: Option<&References>, args: &BenchArgs) {
    if !figures.iter().any(|f| f.serve.is_some()) {
        return;
    }
    let dash = || "-".to_string();
    let pgbench = refs.and_then(|r| r.pgbench.as_ref().ok());
    let graphile = refs.and_then(|r| r.graphile.as_ref().ok());
    println!();
    println!(
        "{:<9} {:>12} {:>8} {:>8} {:>8} {:>26} {:>8} {:>14} {:>20} {:>14} {:>20}",
        "serve",
        "ingest req/s",
        "p50 ms",
        "p99 ms",
        "non-202",
        "ingest vs bar",
        "drain s",
        format!("{}-step st/s", args.steps),
        "vs graphile",
        "1-step st/s",
        "vs graphile"
    );
    for f in figures {
        let Some(s) = &f.serve else { continue };
        let postgres = f.backend == "postgres";
        let (rps, p50, p99, bad, bar, drain) = match &s.ingest {
            Some(i) => {
                let bar = if postgres {
                    pgbench.map(|p| format!("{} pgbench", against(i.rps / p.tps, POSTGRES_INGEST_BAR))).unwrap_or_else(|| "no pgbench".into())
                } else {
                    format!("{} 5000/s", against(i.rps / SQLITE_INGEST_BAR, 1.0))
                };
                (
                    format!("{:.0}", i.rps),
                    format!("{:.2}", i.p50_ms),
                    format!("{:.2}", i.p99_ms),
                    i.not_202().to_string(),
                    bar,
                    format!("{:.1}", i.drain.as_secs_f64()),
                )
            }
            None => (dash(), dash(), dash(), dash(), "no wrk".into(), dash()),
        };
        let bars = if postgres { POSTGRES_STEPS_BARS } else { SQLITE_STEPS_BARS };
        let vs = |steps: &Steps, bar: f64| graphile.map(|g| against(steps.steps_per_sec() / g.jobs_per_sec, bar)).unwrap_or_else(|| "no graphile".into());
        println!(
            "{:<9} {rps:>12} {p50:>8} {p99:>8} {bad:>8} {bar:>26} {drain:>8} {:>14.0} {:>20} {:>14.0} {:>20}",
            f.backend,
            s.multi.steps_per_sec(),
            vs(&s.multi, bars.0),
            s.single.steps_per_sec(),
            vs(&s.single, bars.1)
        );
    }
    match refs.map(|r| &r.pgbench) {
        Some(Ok(p)) => println!("{:<9} {:>12.0}   pgbench ceiling (tps, one ~0.5 KB jsonb insert per transaction)", "pgbench", p.tps),
        Some(Err(why)) => println!("pgbench: not measured: {why}"),
        None => {}
    }
    match refs.map(|r| &r.graphile) {
        Some(Ok(g)) => println!(
            "{:<9} {:>12.0}   graphile-worker {} jobs/s ({} no-op jobs queued in bulk, one worker at concurrency {}, drained in {:.2} s)",
            "graphile", g.jobs_per_sec, g.version, g.jobs, g.concurrency, g.seconds
        ),
        Some(Err(why)) => println!("graphile-worker: not measured: {why}"),
        None => {}
    }
    for f in figures {
        let Some(s) = &f.serve else { continue };
        if let Some(i) = &s.ingest {
            println!(
                "({} ingest: wrk -t{} -c{} -d{}s, {} requests, answers {}{}, wrk's non-2xx/3xx {}; {} runs (with those of requests still in flight at wrk's end) all finished {:.1} s after wrk ended)",
                f.backend,
                args.serve_threads,
                args.serve_connections,
                args.serve_secs,
                i.requests,
                statuses(&i.statuses),
                match i.socket_errors {
                    [0, 0, 0, 0] => String::new(),
                    [c, r, w, t] => format!(", socket errors connect {c} read {r} write {w} timeout {t}"),
                },
                i.non_2xx_3xx,
                i.runs,
                i.drain.as_secs_f64()
            );
        }
        for st in [&s.multi, &s.single] {
            println!(
                "({} steps: {} runs x {} log step(s) = {} steps in {:.2} s from the first post to the last run's end (posted in {:.2} s by {} clients; answers {}; {} runs succeeded) = {:.0} steps/s)",
                f.backend,
                st.runs,
                st.steps,
                st.accepted() * st.steps as u64,
                st.elapsed.as_secs_f64(),
                st.posted.as_secs_f64(),
                args.serve_connections,
                statuses(&st.statuses),
                st.succeeded,
                st.steps_per_sec()
            );
        }
    }
    println!(
        "(serve: a real `switchboard serve` per backend, its workers on (default settings), webhook rate limit {}; bars: ingest ≥ {POSTGRES_INGEST_BAR}x pgbench \
         on PostgreSQL, ≥ {SQLITE_INGEST_BAR} req/s on SQLite; steps/s ≥ {}x / {}x graphile-worker's jobs/s ({}-step / one-step) on SQLite, ≥ {}x / {}x on PostgreSQL)",
        args.serve_rate_limit, SQLITE_STEPS_BARS.0, SQLITE_STEPS_BARS.1, args.steps, POSTGRES_STEPS_BARS.0, POSTGRES_STEPS_BARS.1
    );
}
