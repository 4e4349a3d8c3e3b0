//! A real Prometheus scrapes a hub (contract §4): the `/metrics` text is read
//! by the same Prometheus operators run, its query API returns the hub's
//! metrics, and the shipped alerting rules (`deploy/prometheus/alerts.yml`)
//! load and evaluate against them.
//!
//! The test starts `prometheus` from the Debian package of that name on a free
//! loopback port with a temporary config and storage directory, and fails
//! (never skips) when the binary is missing.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{TestHub, http_client, sample, score};

const GAME: &str = "prom:2026-11-22-lal-bos";

/// How long Prometheus may take to start, scrape and evaluate (it scrapes and
/// evaluates every second here; start-up opens a fresh TSDB).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// How many times a start is retried when the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// The alerting rules shipped for operators.
fn alerts_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml")
}

/// The `prometheus` binary: `$PROMETHEUS_BIN`, else Debian's `/usr/bin/prometheus`,
/// else the first on `PATH`. Panics naming the package when there is none.
fn prometheus_bin() -> PathBuf {
    const INSTALL: &str = "install the Debian package `prometheus` (apt-get install prometheus; \
                           ./scripts/test does it)";
    if let Some(bin) = std::env::var_os("PROMETHEUS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "PROMETHEUS_BIN={} is not a file: point it at a prometheus binary or unset it and {INSTALL}",
            bin.display()
        );
        return bin;
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is missing (no /usr/bin/prometheus, none on PATH): {INSTALL}"
            )
        })
}

/// A free loopback port (free when asked; [`Prometheus::start`] retries if
/// another process takes it before Prometheus binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// A Prometheus server of this test, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`ip:port`) every second as job
    /// `scorehub`, with `alerts.yml` loaded; returns once its HTTP API answers
    /// `/-/ready`.
    async fn start(target: &str) -> Prometheus {
        let bin = prometheus_bin();
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Prometheus::launch(&bin, target).await {
                Ok(prometheus) => return prometheus,
                Err(e) => last_error = e,
            }
        }
        panic!("Prometheus did not start in {PORT_ATTEMPTS} attempts; last: {last_error}");
    }

    async fn launch(bin: &Path, target: &str) -> Result<Prometheus, String> {
        let dir = tempfile::tempdir().expect("creating a temp dir for Prometheus");
        let config = dir.path().join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {alerts:?}\n\
             scrape_configs:\n  - job_name: scorehub\n    static_configs:\n      - targets: [\"{target}\"]\n",
            alerts = alerts_file().display().to_string(),
        );
        std::fs::write(&config, text).expect("writing the Prometheus config");
        let log = dir.path().join("prometheus.log");
        let log_file = File::create(&log).expect("creating the Prometheus log file");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let client = http_client();
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Some(status) = prometheus.child.try_wait().expect("try_wait on Prometheus") {
                return Err(format!(
                    "prometheus exited with {status} during start-up; its log:\n{}",
                    prometheus.log_tail()
                ));
            }
            if let Ok(r) = client.get(prometheus.url("/-/ready")).send().await
                && r.status().is_success()
            {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus was not ready within {PROMETHEUS_WAIT:?}; its log:\n{}",
                    prometheus.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The last lines Prometheus logged, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET path` on the API; asserts `"status":"success"` and returns `data`.
    async fn api(&self, path: &str) -> Value {
        let r = http_client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on Prometheus failed: {e}"));
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on Prometheus: body is not JSON: {e}"));
        assert!(
            status.is_success() && body["status"] == "success",
            "GET {path} on Prometheus answered {status}: {body}"
        );
        body["data"].clone()
    }

    /// The instant vector of `query` (`/api/v1/query`).
    async fn query(&self, query: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", crate::common::encode_query(query));
        let data = self.api(&path).await;
        assert_eq!(data["resultType"], "vector", "{query}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `query` returns a sample of `instance` whose value passes
    /// `check`; returns that sample. Panics after [`PROMETHEUS_WAIT`] showing
    /// the last result, the scrape targets and the log.
    async fn wait_for(&self, query: &str, instance: &str, check: impl Fn(f64) -> bool) -> Value {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let result = self.query(query).await;
            if let Some(sample) = result
                .iter()
                .find(|s| s["metric"]["instance"] == instance && check(sample_value(s)))
            {
                return sample.clone();
            }
            if Instant::now() > deadline {
                let targets = self.api("/api/v1/targets").await;
                panic!(
                    "Prometheus query {query:?} had no passing sample of {instance} within \
                     {PROMETHEUS_WAIT:?}; last result: {result:?}\ntargets: {targets}\nlog:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a query sample (`"value": [time, "1.5"]`); NaN when absent.
fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_hub_and_queries_its_metrics() {
    let hub = TestHub::start().await;
    let target = hub.base.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&target).await;

    // The first scrape: the target is up and a gauge the hub always exports
    // is there with a value (the recorder is shared by every hub of this test
    // binary, so only its presence is certain, not its value).
    prometheus
        .wait_for("up{job=\"scorehub\"}", &target, |v| v == 1.0)
        .await;
    let games = prometheus
        .wait_for("scorehub_games_active", &target, f64::is_finite)
        .await;
    assert_eq!(games["metric"]["job"], "scorehub", "{games}");
    assert!(sample_value(&games) >= 0.0, "{games}");

    // An applied event shows up in the counter on a later scrape.
    hub.put_game(GAME).await;
    hub.post_ok(GAME, score("prom-1", "home", 3)).await;
    let local = sample(
        &hub.get("/metrics").await.text,
        "scorehub_events_total",
        "outcome=\"applied\"",
    )
    .expect("the hub's own /metrics has scorehub_events_total{outcome=\"applied\"}");
    assert!(local >= 1.0, "applied events counted by the hub: {local}");
    let applied = prometheus
        .wait_for("scorehub_events_total{outcome=\"applied\"}", &target, |v| {
            v >= local
        })
        .await;
    assert_eq!(applied["metric"]["outcome"], "applied", "{applied}");

    // Histograms arrive as buckets that PromQL can use, as the alerts do.
    prometheus
        .wait_for(
            "sum by (instance) (scorehub_fanout_seconds_count)",
            &target,
            |v| v >= 1.0,
        )
        .await;

    // The shipped rules loaded, and every rule evaluates without error
    // against the hub's real series.
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let data = prometheus.api("/api/v1/rules?type=alert").await;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
        for wanted in [
            "ScorehubDown",
            "ScorehubNotReady",
            "ScorehubRedisDown",
            "ScorehubFanoutLatencyHigh",
            "ScorehubSlowConsumersHigh",
            "ScorehubEventRejectionsHigh",
            "ScorehubHttp5xxHigh",
        ] {
            assert!(
                names.contains(&wanted),
                "alert {wanted} not loaded from {}: {names:?}",
                alerts_file().display()
            );
        }
        let bad: Vec<&Value> = rules.iter().filter(|r| r["health"] != "ok").collect();
        if bad.is_empty() {
            let down = rules
                .iter()
                .find(|r| r["name"] == "ScorehubDown")
                .expect("listed above");
            assert_eq!(down["state"], "inactive", "the hub is up: {down}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all evaluated with health ok within {PROMETHEUS_WAIT:?}: {bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop(prometheus);
    hub.shutdown().await;
}
