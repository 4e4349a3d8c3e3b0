//! The process lifecycle and the SRE surface under stress: a request that
//! stalls at SIGTERM, a Redis password that looks like a path, the
//! not-ready alert for a node whose event log failed. Each test failed
//! before its fix.

use std::time::{Duration, Instant};

use scorehub::auth::Scope;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{BinaryHub, run_cli};

/// `http.shutdown_timeout` is documented (config/default.toml) as "On SIGTERM,
/// how long in-flight requests and sockets get to finish", but it bounds only
/// the fan-session drain: `Hub::serve` awaits axum's graceful shutdown (every
/// in-flight request) without any bound, so one client that stalls mid-body
/// holds the process until main's 9.5 s watchdog, which then exits 0 without
/// `registry.close()` (the event log is never flushed/closed, `stopped` is
/// never logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_a_stalled_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut hub = BinaryHub::spawn(dir.path(), &[("SCOREHUB_HTTP__SHUTDOWN_TIMEOUT", "1s")]);
    assert_eq!(hub.get("/healthz").await.status, 200);
    let token = hub.token(&["*"], Scope::Admin);
    let addr = hub.base.trim_start_matches("http://").to_owned();
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"ev"
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    // The request is now in flight: its handler waits for the rest of the body.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    hub.sigterm();
    let status = hub.wait_exit(Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", hub.stderr());
    assert!(
        took < Duration::from_secs(4),
        "with http.shutdown_timeout = 1s one stalled request held shutdown for {took:?}; stderr:\n{}",
        hub.stderr()
    );
    assert!(
        hub.stderr().contains("stopped"),
        "the drain did not reach the event log close (`stopped` never logged); stderr:\n{}",
        hub.stderr()
    );
    drop(stalled);
}

/// `redact_url` stops looking for user info at the first `/`, so a password
/// containing `/` (common in base64-generated passwords) is printed in full:
/// by `Debug` of the config, the `cluster mode` info line, and the start-up
/// error below.
#[test]
fn redis_password_with_a_slash_is_never_printed() {
    let url = "redis://:s3cr/et@127.0.0.1:1/0";
    let shown = scorehub::config::redact_url(url);
    assert!(!shown.contains("s3cr"), "redact_url({url:?}) = {shown:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli(
        &["serve"],
        &[
            ("SCOREHUB_REDIS__URL", url),
            ("SCOREHUB_AUTH__SECRET", crate::common::SECRET),
            ("SCOREHUB_HTTP__LISTEN", "127.0.0.1:0"),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        !out.stderr.contains("s3cr/et") && !out.stdout.contains("s3cr/et"),
        "the Redis password leaks into the output:\n{}",
        out.stderr
    );
}

/// `ScorehubNotReady` claims to cover "event-log writes that failed (single
/// node)" but is built on `increase(scorehub_log_errors_total[5m]) > 0`. The hub
/// creates that counter only at its first error (never exported as 0), so the
/// first sample already holds the errors and `increase` sees none; and once
/// writes stop (scorekeepers give up on 503s), `increase` drops to 0 while the
/// node stays unready. The hub exports `scorehub_ready` (0 here) which the rule
/// ignores ("There is no readiness gauge" in its comment is stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_alert_fires_for_a_failed_event_log() {
    // From the real binary: the log-error counter starts at 0 and the
    // readiness gauge is there.
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = BinaryHub::spawn(dir.path(), &[]);
    crate::common::eventually("scorehub_ready exported", crate::common::WAIT, || async {
        hub.get("/metrics").await.text.contains("scorehub_ready 1")
    })
    .await;
    let text = hub.get("/metrics").await.text;
    assert!(
        text.lines().any(|l| l == "scorehub_log_errors_total 0"),
        "the log-error counter is exported from 0, so increase() sees the first error"
    );
    drop(hub);

    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let tmp = tempfile::tempdir().expect("temp dir");
    let test = tmp.path().join("not_ready_test.yml");
    std::fs::write(
        &test,
        format!(
            r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - name: one failed write burst, then not ready for 10 more minutes
    interval: 1m
    input_series:
      - series: 'scorehub_log_errors_total{{job="scorehub", instance="solo:8080"}}'
        values: '_ _ 4 4 4 4 4 4 4 4 4 4 4 4 4 4'
      - series: 'scorehub_ready{{job="scorehub", instance="solo:8080"}}'
        values: '1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'scorehub_redis_up{{job="scorehub", instance="solo:8080"}}'
        values: '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 12m
        alertname: ScorehubNotReady
        exp_alerts:
          - exp_labels:
              severity: critical
              job: scorehub
              instance: solo:8080
            exp_annotations:
              summary: "scorehub solo:8080 is not ready: it refuses events"
              description: "solo:8080 cannot accept events (its /readyz answers 503 with the reason): scorekeepers posting to it get 503 not_ready. Reads and fans keep working."
              runbook_url: "docs/RUNBOOK.md#scorehubnotready"
"#,
            rules = rules.display()
        ),
    )
    .expect("write the promtool test");
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .expect("running promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "ScorehubNotReady does not fire for a node whose event log failed and that stays unready:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
