//! schemathesis against a real `switchboard serve`: `scripts/schemathesis.sh` starts the server
//! binary on a free port, seeds data, and runs `st` on `/openapi.json` with a bounded budget
//! (about 30 s); any finding (a 5xx, an undocumented status code or content type, an answer
//! that does not fit its schema) fails this test with schemathesis's report.
//!
//! Needs schemathesis 4 (`pip install schemathesis`, which gives `st`). Without it the test
//! prints a notice and passes, unless `CI=true`, where it fails.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// The whole check, server start and seeding included; the script bounds each schemathesis pass
/// itself, this only catches a hang.
const BUDGET: Duration = Duration::from_secs(300);

/// Whether `st` runs; under `CI=true` a missing schemathesis panics.
async fn schemathesis_available() -> bool {
    let found = Command::new("st").arg("--version").output().await.is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the schemathesis check needs `st` under CI=true: pip install schemathesis");
        }
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: schemathesis (`st`) is missing; the schemathesis check is skipped (pip install schemathesis; set CI=true to fail instead)"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_drift() {
    if !schemathesis_available().await {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/schemathesis.sh");
    // `timeout` signals its whole process group: the script, the server and schemathesis.
    let output = Command::new("timeout")
        .args(["--kill-after=10", &BUDGET.as_secs().to_string(), "bash"])
        .arg(&script)
        .env("SWITCHBOARD_BIN", env!("CARGO_BIN_EXE_switchboard-under-test"))
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run timeout(1)");
    assert_ne!(output.status.code(), Some(124), "{} took over {BUDGET:?}:\n{}", script.display(), String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "schemathesis found drift between /openapi.json and the answers ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
