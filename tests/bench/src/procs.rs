//! Steps/s with real worker processes: `switchboard worker` (the server binary, `--server-bin`)
//! started 1, 2 and 4 times against one PostgreSQL database, after the runs were queued with no worker running.
//! Also the helpers to start, watch and stop such a process (the memory measurement uses them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{Backend, BenchArgs, Figures};

/// One worker count's figures.
pub(super) struct ProcFigure {
    processes: usize,
    runs: usize,
    steps: usize,
    /// From starting the processes until every run finished.
    elapsed: Duration,
    /// Queueing the runs through the engine's ingest.
    queued: Duration,
    /// CPU seconds the worker processes used, together.
    worker_cpu: f64,
    /// Share of the machine's CPU time that was busy meanwhile (every process).
    machine_busy: f64,
}

/// A running `switchboard worker` process.
pub(super) struct WorkerProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts `<exe> worker` (the server binary) on `database_url` with its data dir (secret key) in `dir`,
    /// logging to a file in `dir` with `log` as its filter (the filter in
    /// `SWITCHBOARD_BENCH_WORKER_LOG` instead, if set, to look into a figure).
    pub(super) fn spawn(exe: &Path, database_url: &str, dir: &Path, log: &str) -> anyhow::Result<Self> {
        Self::spawn_command(exe, "worker", database_url, dir, log, &[])
    }

    /// Starts `<exe> <command>` (`worker`, `serve`) as [`spawn`](Self::spawn) does, with `env`
    /// as further `SWITCHBOARD_…` settings.
    pub(super) fn spawn_command(exe: &Path, command: &str, database_url: &str, dir: &Path, log: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let filter = std::env::var("SWITCHBOARD_BENCH_WORKER_LOG").unwrap_or_else(|_| log.to_string());
        std::fs::create_dir_all(dir)?;
        let mut cmd = tokio::process::Command::new(exe);
        // Only the settings given here: none of the caller's SWITCHBOARD_… variables, and no
        // switchboard.toml (the working directory is the bench's own).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                cmd.env_remove(key);
            }
        }
        let log = dir.join(format!("{command}-{}.log", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&log)?;
        cmd.arg(command)
            .current_dir(dir)
            .env("SWITCHBOARD_DATABASE_URL", database_url)
            .env("SWITCHBOARD_DATA_DIR", dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {} {command}", exe.display()))?;
        let pid = child.id().with_context(|| format!("the {command} process's pid"))?;
        Ok(Self { child, pid, log })
    }

    /// Its log so far.
    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the end of its log if the process has exited.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = self.log();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            anyhow::bail!("switchboard process {} exited ({status}):\n{tail}", self.pid);
        }
        Ok(())
    }

    /// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
    pub(super) fn status_kb(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
        line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// CPU seconds (user + system, all threads) used so far.
    pub(super) fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(self.pid)
    }

    /// SIGTERM (the worker finishes in-flight steps), then waits; SIGKILL after 30 s.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        // `kill` instead of libc: this crate forbids unsafe code.
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("switchboard process {} did not stop within 30 s of SIGTERM; killing it", self.pid);
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// CPU seconds (user + system, all threads) process `pid` has used so far.
pub(super) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
    })
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`.
pub(super) fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = cpu.iter().take(8).sum();
    // idle and iowait are not busy.
    let idle = cpu.get(3)? + cpu.get(4)?;
    Some((total - idle, total))
}

pub(super) async fn measure(b: &Backend, args: &BenchArgs) -> anyhow::Result<Vec<ProcFigure>> {
    let exe = args.server_bin()?;
    let dir = std::env::temp_dir().join(format!("switchboard-bench-procs-{}", std::process::id()));
    let mut out = Vec::new();
    for &n in &args.procs {
        // A fresh workflow and fresh runs for each worker count.
        let id = format!("procs-{n}");
        let row = b.log_workflow(&id, args.steps).await?;
        let started = Instant::now();
        b.queue_runs(&row, args.proc_runs, |_| json!({ "lead": { "first_name": "Ada" } })).await?;
        let queued = started.elapsed();

        let cpu_before = machine_jiffies();
        let started = Instant::now();
        let mut workers = (0..n).map(|_| WorkerProcess::spawn(&exe, &b.url, &dir, "warn")).collect::<anyhow::Result<Vec<_>>>()?;
        let deadline = started + Duration::from_secs(1_800);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let done = b.probe.finished_runs(&id).await?;
            if done >= args.proc_runs as i64 {
                break;
            }
            for w in &mut workers {
                w.check_alive()?;
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} workers did not finish {} runs in 30 minutes ({done} done)", args.proc_runs);
        }
        let elapsed = started.elapsed();
        let cpu_after = machine_jiffies();
        let worker_cpu = workers.iter().filter_map(WorkerProcess::cpu_secs).sum();
        for w in workers {
            w.stop().await?;
        }
        let succeeded = b.probe.succeeded_runs(&id).await?;
        anyhow::ensure!(succeeded == args.proc_runs as i64, "{n} workers: {succeeded} of {} runs succeeded", args.proc_runs);
        let machine_busy = match (cpu_before, cpu_after) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => f64::NAN,
        };
        eprintln!("  {n} worker process(es): {:.1} s", elapsed.as_secs_f64());
        out.push(ProcFigure { processes: n, runs: args.proc_runs, steps: args.steps, elapsed, queued, worker_cpu, machine_busy });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

pub(super) fn print(figures: &[Figures], _args: &BenchArgs) {
    let Some(f) = figures.iter().find(|f| !f.procs.is_empty()) else { return };
    println!();
    println!("{:<10} {:>10} {:>10} {:>10} {:>16} {:>14} {:>14}", "backend", "workers", "steps/s", "drained", "worker CPU s", "machine busy", "queued runs/s");
    for p in &f.procs {
        let steps = (p.runs * p.steps) as f64;
        println!(
            "{:<10} {:>10} {:>10.0} {:>9.1}s {:>16.1} {:>13.0}% {:>14.0}",
            f.backend,
            p.processes,
            steps / p.elapsed.as_secs_f64(),
            p.elapsed.as_secs_f64(),
            p.worker_cpu,
            p.machine_busy * 100.0,
            p.runs as f64 / p.queued.as_secs_f64()
        );
    }
    let p = &f.procs[0];
    println!(
        "(procs: {} runs x {} log steps queued through the engine with no worker running, then drained by N \
         `switchboard worker` processes (concurrency 128 each), timed from their start; SQLite: not measured, one file \
         has one writer)",
        p.runs, p.steps
    );
}
