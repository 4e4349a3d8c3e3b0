//! Starting the hub for a run (`--hub-bin`): one or more `scorehub serve`
//! processes on free loopback ports, each with its own temporary storage and
//! log file, a random shared secret and a token minted with it, and — with
//! `--redis` — a private `redis-server` they share. Everything lives in one
//! temporary directory, removed at the end unless `--keep-hub-dir`.
//!
//! The hub refuses unknown `SCOREHUB_*` variables, and an inherited
//! `SCOREHUB_REDIS__URL` or `SCOREHUB_CONFIG` would point it at someone else's
//! state, so every inherited `SCOREHUB_*` variable (and `RUST_LOG`, which would
//! override the log level) is removed from the children's environment; only
//! the run's own settings and `--hub-env` reach them.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::ValueEnum;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

use crate::{
    cluster::{self, ClusterNode, ClusterPlan},
    system::ProcessKind,
};

/// How long a hub may take to log `listening addr=`.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// How long redis-server may take to answer `PING`.
const REDIS_WAIT: Duration = Duration::from_secs(10);

/// How long a process gets to exit after SIGTERM before it is killed (the hub
/// promises 10 s).
const STOP_WAIT: Duration = Duration::from_secs(12);

/// The marker the hub logs with its bound address.
const LISTENING: &str = "listening addr=";

/// Environment variables the run sets itself, which `--hub-env` may not.
const RESERVED: [&str; 5] = [
    "SCOREHUB_HTTP__LISTEN",
    "SCOREHUB_AUTH__SECRET",
    "SCOREHUB_REDIS__URL",
    "SCOREHUB_REDIS__CLUSTER",
    "SCOREHUB_CONFIG",
];

/// Process ids of every child started, for [`kill_all_now`].
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Children the run killed on purpose ([`kill9`]): their death is no news.
static KILLED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The hub's log format (`log.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// The value of `SCOREHUB_LOG__FORMAT`.
    fn value(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub(crate) struct LaunchPlan {
    /// The `scorehub` binary.
    pub(crate) hub_bin: PathBuf,
    /// Hub processes to start (more than one needs `redis`).
    pub(crate) nodes: usize,
    /// The `redis-server` binary, when the hubs share a private Redis.
    pub(crate) redis_bin: Option<PathBuf>,
    /// A private Redis Cluster the hubs share instead (`--scenario cluster`).
    pub(crate) cluster: Option<ClusterPlan>,
    /// The hubs' log format.
    pub(crate) log_format: LogFormat,
    /// Extra `SCOREHUB_*` settings for every hub, e.g. `SCOREHUB_STORAGE__FSYNC=false`.
    pub(crate) hub_env: Vec<(String, String)>,
    /// Keep the temporary directory (logs, event logs) after the run.
    pub(crate) keep_dir: bool,
}

/// Parses one `--hub-env KEY=VALUE`.
pub(crate) fn parse_hub_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if !key.starts_with("SCOREHUB_") {
        return Err(format!(
            "{key} is not a hub setting: --hub-env takes SCOREHUB_<SECTION>__<KEY>=VALUE"
        ));
    }
    if RESERVED.contains(&key) {
        return Err(format!(
            "{key} is set by the load test itself when it starts the hub"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// One started process.
#[derive(Debug)]
pub(crate) struct Started {
    /// Its name in messages, e.g. `hub 1`.
    pub(crate) name: String,
    /// The process (killed if dropped while running).
    pub(crate) child: Child,
    /// Its process id.
    pub(crate) pid: u32,
    /// Where its stdout and stderr go.
    pub(crate) log: PathBuf,
}

/// The processes of a run, running.
#[derive(Debug)]
pub(crate) struct Launched {
    /// The temporary directory (`None` once kept).
    dir: Option<tempfile::TempDir>,
    /// Its path.
    path: PathBuf,
    /// The private redis-server.
    redis: Option<Started>,
    /// The private Redis Cluster's nodes.
    cluster: Vec<ClusterNode>,
    /// The hubs, node 1 first.
    hubs: Vec<Started>,
    /// The hubs' addresses, same order.
    addrs: Vec<SocketAddr>,
    /// An admin token for every game, minted with the run's secret.
    pub(crate) token: String,
    /// Whether the directory is kept after the run.
    keep_dir: bool,
}

/// Starts what `plan` asks for: Redis first, then each hub, then mints the
/// token. On failure, whatever was started is stopped again (killed on drop).
pub(crate) async fn start(plan: &LaunchPlan) -> Result<Launched> {
    ensure!(
        plan.hub_bin.is_file(),
        "--hub-bin {}: no such file (build it with `cargo build --release -p scorehub`)",
        plan.hub_bin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("scorehub-loadtest-")
        .tempdir()
        .context("creating a temporary directory for the hub")?;
    let path = dir.path().to_path_buf();
    let secret = random_secret()?;
    let redis = match &plan.redis_bin {
        Some(bin) => Some(start_redis(bin, &path).await?),
        None => None,
    };
    let mut env = vec![
        ("SCOREHUB_AUTH__SECRET".to_string(), secret),
        (
            "SCOREHUB_LOG__FORMAT".to_string(),
            plan.log_format.value().to_string(),
        ),
    ];
    if let Some((_, port)) = &redis {
        env.push((
            "SCOREHUB_REDIS__URL".to_string(),
            format!("redis://127.0.0.1:{port}/0"),
        ));
    }
    let cluster = match &plan.cluster {
        Some(cluster_plan) => cluster::start(cluster_plan, &path).await?,
        None => Vec::new(),
    };
    if !cluster.is_empty() {
        let seeds: Vec<String> = cluster
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect();
        env.push(("SCOREHUB_REDIS__CLUSTER".to_string(), seeds.join(",")));
    }
    let mut launched = Launched {
        dir: Some(dir),
        path: path.clone(),
        redis: redis.map(|(started, _)| started),
        cluster,
        hubs: Vec::new(),
        addrs: Vec::new(),
        token: String::new(),
        keep_dir: plan.keep_dir,
    };
    for node in 1..=plan.nodes {
        let (hub, addr) = start_hub(plan, &path, node, &env).await?;
        launched.hubs.push(hub);
        launched.addrs.push(addr);
    }
    launched.token = mint_token(&plan.hub_bin, &path, &env).await?;
    if plan.keep_dir
        && let Some(dir) = launched.dir.take()
    {
        let _ = dir.keep();
    }
    Ok(launched)
}

impl Launched {
    /// The hubs' HTTP bases, node 1 first.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    /// Every started process as `(role, kind, pid)`, hubs first.
    pub(crate) fn processes(&self) -> Vec<(String, ProcessKind, u32)> {
        let mut list: Vec<_> = self
            .hubs
            .iter()
            .map(|h| (h.name.clone(), ProcessKind::Hub, h.pid))
            .collect();
        if let Some(redis) = &self.redis {
            list.push((redis.name.clone(), ProcessKind::Redis, redis.pid));
        }
        for node in &self.cluster {
            list.push((
                node.started.name.clone(),
                ProcessKind::Redis,
                node.started.pid,
            ));
        }
        list
    }

    /// The Redis Cluster's nodes as `(port, pid)` (empty without one).
    pub(crate) fn cluster_nodes(&self) -> Vec<(u16, u32)> {
        self.cluster
            .iter()
            .map(|n| (n.port, n.started.pid))
            .collect()
    }

    /// The temporary directory, when it is kept after the run.
    pub(crate) fn kept_dir(&self) -> Option<&Path> {
        self.keep_dir.then_some(self.path.as_path())
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period),
    /// hubs before Redis, and removes the directory unless kept. Returns a
    /// note for each process that did not exit cleanly.
    pub(crate) async fn stop(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let hubs = std::mem::take(&mut self.hubs);
        let stopping = hubs.into_iter().map(stop_process);
        for note in futures_util::future::join_all(stopping).await {
            notes.extend(note);
        }
        if let Some(redis) = self.redis.take() {
            notes.extend(stop_process(redis).await);
        }
        let nodes = std::mem::take(&mut self.cluster);
        let stopping = nodes.into_iter().map(|n| stop_process(n.started));
        for note in futures_util::future::join_all(stopping).await {
            notes.extend(note);
        }
        notes
    }
}

/// Sends SIGTERM and waits; kills after [`STOP_WAIT`]. Returns a note unless
/// the process exited with status 0.
pub(crate) async fn stop_process(mut started: Started) -> Option<String> {
    let name = started.name.clone();
    let killed = KILLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .contains(&started.pid);
    if killed {
        // Reaped here; it died when the run meant it to.
        let _ = tokio::time::timeout(STOP_WAIT, started.child.wait()).await;
        forget_child(started.pid);
        return None;
    }
    if let Some(pid) = i32::try_from(started.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // It may have exited already; waiting below tells.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let status = match tokio::time::timeout(STOP_WAIT, started.child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = started.child.kill().await;
            forget_child(started.pid);
            return Some(format!(
                "{name} did not exit within {STOP_WAIT:?} of SIGTERM and was killed; log: {}",
                started.log.display()
            ));
        }
    };
    forget_child(started.pid);
    match status {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!(
            "{name} exited with {status} after SIGTERM; last log lines:\n{}",
            log_tail(&started.log)
        )),
        Err(e) => Some(format!("waiting for {name}: {e}")),
    }
}

/// Kills every started child at once (SIGKILL), for a second Ctrl-C that
/// ends the process without running destructors.
pub(crate) fn kill_all_now() {
    let pids = CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    for pid in pids {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Kills child `pid` with SIGKILL on purpose (a failover run's primary):
/// no cleanup, as a crash would. Stopping it later reports nothing.
pub(crate) fn kill9(pid: u32) -> Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    KILLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(pid);
    rustix::process::kill_process(target, rustix::process::Signal::KILL)
        .with_context(|| format!("kill -9 {pid}"))
}

/// Remembers a child for [`kill_all_now`].
fn remember_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(pid);
}

/// Forgets a child that has exited.
pub(crate) fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .retain(|p| *p != pid);
}

/// A command for `bin` run in `dir` with the inherited environment minus
/// `SCOREHUB_*` and `RUST_LOG`, plus `env`.
fn scrubbed(bin: &Path, dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        let bytes = key.as_encoded_bytes();
        if bytes.starts_with(b"SCOREHUB_") || bytes == b"RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(mut cmd: Command, name: &str, log: &Path) -> Result<Started> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("opening {} twice", log.display()))?;
    cmd.stdout(file).stderr(err);
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let pid = child
        .id()
        .with_context(|| format!("{name} exited before its pid could be read"))?;
    remember_child(pid);
    Ok(Started {
        name: name.to_string(),
        child,
        pid,
        log: log.to_path_buf(),
    })
}

/// Starts hub number `node` and waits for its `listening addr=` line.
async fn start_hub(
    plan: &LaunchPlan,
    dir: &Path,
    node: usize,
    env: &[(String, String)],
) -> Result<(Started, SocketAddr)> {
    let home = dir.join(format!("hub{node}"));
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let mut env = env.to_vec();
    env.push((
        "SCOREHUB_HTTP__LISTEN".to_string(),
        "127.0.0.1:0".to_string(),
    ));
    env.push((
        "SCOREHUB_STORAGE__DIR".to_string(),
        home.join("data").display().to_string(),
    ));
    env.extend(plan.hub_env.iter().cloned());
    let mut cmd = scrubbed(&plan.hub_bin, &home, &env);
    cmd.arg("serve");
    let name = format!("hub {node}");
    let log = dir.join(format!("hub{node}.log"));
    let mut hub = spawn_logged(cmd, &name, &log)?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = listening_addr(&text) {
            return Ok((hub, addr));
        }
        if let Ok(Some(status)) = hub.child.try_wait() {
            forget_child(hub.pid);
            bail!(
                "{name} ({}) exited with {status} during start-up; its log:\n{}",
                plan.hub_bin.display(),
                log_tail(&log)
            );
        }
        if started.elapsed() > LISTEN_WAIT {
            bail!(
                "{name} logged no `{LISTENING}...` line within {LISTEN_WAIT:?}; its log:\n{}",
                log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The address in the first `listening addr=IP:PORT` of a hub's log, in
/// either log format (in JSON it sits inside the message string).
fn listening_addr(log: &str) -> Option<SocketAddr> {
    let at = log.find(LISTENING)? + LISTENING.len();
    let rest = &log[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Runs `scorehub token` with the run's environment: an admin token for every
/// game, valid one hour.
async fn mint_token(bin: &Path, dir: &Path, env: &[(String, String)]) -> Result<String> {
    let mut cmd = scrubbed(bin, dir, env);
    cmd.args([
        "token", "--sub", "loadtest", "--games", "*", "--scope", "admin", "--ttl", "1h",
    ]);
    let output = cmd
        .output()
        .await
        .with_context(|| format!("running {} token", bin.display()))?;
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    ensure!(
        output.status.success() && !token.is_empty(),
        "{} token exited with {}: {}",
        bin.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(token)
}

/// A random 64-hex-digit secret from the system's random source.
fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut file = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut file, &mut bytes).context("reading /dev/urandom")?;
    let mut hex = String::with_capacity(64);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// A port free right now on 127.0.0.1 (another process could take it before
/// it is used; the caller retries).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// Starts a private redis-server on a free port, without persistence, and
/// waits until it answers `PING`. Returns it and its port.
async fn start_redis(bin: &Path, dir: &Path) -> Result<(Started, u16)> {
    let log = dir.join("redis.log");
    let mut last_error = None;
    for _attempt in 0..3 {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut redis = spawn_logged(cmd, "redis-server", &log).map_err(|e| {
            e.context(format!(
                "is {} installed? (apt-get install redis-server, or give --redis-bin)",
                bin.display()
            ))
        })?;
        let started = Instant::now();
        loop {
            if ping_redis(port).await {
                return Ok((redis, port));
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                forget_child(redis.pid);
                last_error = Some(format!(
                    "redis-server exited with {status} on port {port}:\n{}",
                    log_tail(&log)
                ));
                break;
            }
            if started.elapsed() > REDIS_WAIT {
                bail!(
                    "redis-server did not answer PING on port {port} within {REDIS_WAIT:?}:\n{}",
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bail!(
        "redis-server would not start: {}",
        last_error.unwrap_or_default()
    )
}

/// True when a Redis on `port` answers `PING` with `+PONG`.
pub(crate) async fn ping_redis(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<bool, std::io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

/// The last 30 lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            lines[from..].join("\n")
        }
        Err(e) => format!("<{} unreadable: {e}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::{listening_addr, parse_hub_env, random_secret};

    #[test]
    fn the_address_is_found_in_both_log_formats() {
        let pretty = "2026-11-22T02:55:35.825409Z  INFO scorehub: listening addr=127.0.0.1:18080\n";
        assert_eq!(
            listening_addr(pretty),
            Some("127.0.0.1:18080".parse().expect("addr"))
        );
        let json = r#"{"timestamp":"x","level":"INFO","fields":{"message":"listening addr=127.0.0.1:40123"},"target":"scorehub"}"#;
        assert_eq!(
            listening_addr(json),
            Some("127.0.0.1:40123".parse().expect("addr"))
        );
        let v6 = "INFO listening addr=[::1]:9000 more";
        assert_eq!(
            listening_addr(v6),
            Some("[::1]:9000".parse().expect("addr"))
        );
        assert_eq!(listening_addr("INFO starting\n"), None);
    }

    #[test]
    fn hub_env_takes_hub_settings_but_not_the_runs_own() {
        assert_eq!(
            parse_hub_env("SCOREHUB_STORAGE__FSYNC=false"),
            Ok(("SCOREHUB_STORAGE__FSYNC".into(), "false".into()))
        );
        assert!(parse_hub_env("SCOREHUB_WS__QUEUE_FRAMES").is_err());
        assert!(parse_hub_env("RUST_LOG=debug").is_err());
        let err = parse_hub_env("SCOREHUB_AUTH__SECRET=x").expect_err("reserved");
        assert!(err.contains("set by the load test"), "{err}");
    }

    #[test]
    fn secrets_are_long_and_differ() {
        let a = random_secret().expect("urandom");
        let b = random_secret().expect("urandom");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
