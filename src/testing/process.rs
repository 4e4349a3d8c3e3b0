//! What the cluster and sentinel fixtures share: Redis processes on free
//! loopback ports (each with its own directory and log file), bounded waits,
//! `redis-cli` runs with a time limit, and a minimal RESP2 client for the
//! fixtures' own probes (no `CLIENT SETINFO` or other chatter of a full
//! client, so `INFO commandstats` shows only what the probes send).

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::answers_ping;

/// The bound on every wait of the fixtures: start-up, convergence, failover.
pub(super) const WAIT: Duration = Duration::from_secs(30);
/// How long one process may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Fresh ports tried when another process grabs the one we picked.
const PORT_ATTEMPTS: usize = 5;
/// Read and write timeout of one probe command (`MIGRATE` of a batch included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The offset of the cluster bus port from the client port (Redis' default).
pub(super) const BUS_PORT_OFFSET: u16 = 10_000;
/// What to do when a Redis binary is missing.
const INSTALL_HINT: &str =
    "install redis-server / redis-tools / redis-sentinel (apt-get) or run ./scripts/test";

/// Panics with the install hint when spawning `program` failed.
pub(super) fn spawn_failed(program: &str, e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::NotFound {
        panic!("{program} not found: {INSTALL_HINT}");
    }
    panic!("cannot run {program}: {e} ({INSTALL_HINT})");
}

/// Creates a fresh directory under the system temp dir, named after `prefix`,
/// this process and a counter.
pub(super) fn temp_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "scorehub-{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create a temp dir {}: {e}", dir.display());
    }
    dir
}

/// Hands out free loopback ports, never the same one twice for one fixture
/// (the OS may give a just-released port back), optionally with the cluster
/// bus port (`port + 10000`) free as well.
#[derive(Debug, Default)]
pub(super) struct Ports {
    used: HashSet<u16>,
}

impl Ports {
    /// A port that is free now (and, with `bus`, whose bus port is too).
    pub(super) fn pick(&mut self, bus: bool) -> u16 {
        for _ in 0..1000 {
            let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => addr.port(),
                Err(e) => panic!("cannot find a free loopback port: {e}"),
            };
            if self.used.contains(&port) {
                continue;
            }
            if bus {
                let Some(bus_port) = port.checked_add(BUS_PORT_OFFSET) else {
                    continue;
                };
                if self.used.contains(&bus_port)
                    || TcpListener::bind(("127.0.0.1", bus_port)).is_err()
                {
                    continue;
                }
                self.used.insert(bus_port);
            }
            self.used.insert(port);
            return port;
        }
        panic!("found no free loopback port (with bus port: {bus}) in 1000 tries");
    }
}

/// One Redis process (`redis-server` or `redis-sentinel`) on a loopback
/// port, in its own directory, logging to `<dir>/redis.log`. Killed with
/// `SIGKILL` on drop; the directory belongs to the fixture that owns it.
#[derive(Debug)]
pub(super) struct Daemon {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Spawns `program` with the arguments `args(port, dir, log)` builds for
    /// a fresh port and a fresh directory `<parent>/<label>-<port>`, and waits
    /// until it answers `PING`. Another port is tried when the process exits
    /// early (someone else took the port); panics after a few tries.
    pub(super) fn start(
        program: &str,
        parent: &Path,
        label: &str,
        ports: &mut Ports,
        bus: bool,
        args: impl Fn(u16, &Path, &Path) -> Vec<OsString>,
    ) -> Daemon {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = ports.pick(bus);
            let dir = parent.join(format!("{label}-{port}"));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                panic!("cannot create {} for {program}: {e}", dir.display());
            }
            let log = dir.join("redis.log");
            let child = Command::new(program)
                .args(args(port, &dir, &log))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => spawn_failed(program, &e),
            };
            let mut daemon = Daemon {
                port,
                log,
                child: Some(child),
            };
            match daemon.wait_for_ping(program) {
                Ok(()) => return daemon,
                Err(e) => {
                    last_error = e;
                    daemon.kill9();
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        panic!("{program} ({label}) did not start after {PORT_ATTEMPTS} attempts: {last_error}");
    }

    fn wait_for_ping(&mut self, program: &str) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "{program} on port {} exited with {status}: {}",
                    self.port,
                    self.log_tail(5)
                ));
            }
            if answers_ping(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{program} on port {} did not answer PING within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.log_tail(5)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process was started and not killed.
    pub(super) fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with `SIGKILL` and waits for it to die.
    pub(super) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `n` lines of the log, joined with ` | `.
    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(n).collect();
        tail.reverse();
        tail.join(" | ")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The log tails of `daemons`, one line per process, for panic messages.
pub(super) fn log_tails<'a>(daemons: impl IntoIterator<Item = &'a Daemon>) -> String {
    daemons
        .into_iter()
        .map(|d| {
            let state = if d.alive() { "running" } else { "killed" };
            format!("\n  port {} ({state}): {}", d.port, d.log_tail(8))
        })
        .collect()
}

/// Calls `probe` every 50 ms until it returns `Ok`, for at most `timeout`;
/// the error is the probe's last one.
pub(super) fn wait_for<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("not within {timeout:?}; last: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs `redis-cli -e -h 127.0.0.1 -p <port> <args>`, killed after
/// `timeout`; the standard output (trailing newline trimmed) when it exits
/// with 0, else its output and error output.
pub(super) fn redis_cli<S: AsRef<std::ffi::OsStr>>(
    port: u16,
    args: &[S],
    timeout: Duration,
) -> Result<String, String> {
    let mut command = Command::new("redis-cli");
    command
        .args(["-e", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(args);
    let shown = format!(
        "redis-cli -p {port} {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, stdout, stderr) =
        run_bounded(&mut command, "redis-cli", timeout).map_err(|e| format!("`{shown}`: {e}"))?;
    if status {
        let mut out = String::from_utf8_lossy(&stdout).into_owned();
        if out.ends_with('\n') {
            out.pop();
        }
        Ok(out)
    } else {
        Err(format!(
            "`{shown}` failed: {} {}",
            String::from_utf8_lossy(&stdout).trim(),
            String::from_utf8_lossy(&stderr).trim()
        ))
    }
}

/// Runs `command` with its output captured, killed after `timeout`:
/// (exited with 0, stdout, stderr).
fn run_bounded(
    command: &mut Command,
    program: &str,
    timeout: Duration,
) -> Result<(bool, Vec<u8>, Vec<u8>), String> {
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => spawn_failed(program, &e),
    };
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = read_all(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read_all(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("killed after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("cannot wait for it: {e}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = status.map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&stdout)))?;
    Ok((status.success(), stdout, stderr))
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n...`
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or bulk reply; an error reply or any other kind
    /// is an `Err` naming it.
    pub(super) fn text(self) -> Result<String, String> {
        match self {
            Reply::Status(s) => Ok(s),
            Reply::Bulk(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Error(e) => Err(e),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}

/// Sends one command to `127.0.0.1:<port>` on a fresh connection and reads
/// its reply. An error reply is `Ok(Reply::Error)`; `Err` is a connection or
/// protocol failure.
pub(super) fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Result<Reply, String> {
    let mut replies = pipeline(port, &[args])?;
    replies
        .pop()
        .ok_or_else(|| format!("127.0.0.1:{port}: no reply"))
}

/// Sends `commands` on one fresh connection (so `WAIT` after a write sees
/// that write) and reads one reply per command.
pub(super) fn pipeline<C: AsRef<[A]>, A: AsRef<[u8]>>(
    port: u16,
    commands: &[C],
) -> Result<Vec<Reply>, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let fail = |e: std::io::Error| format!("127.0.0.1:{port}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(fail)?;
    stream
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .map_err(fail)?;
    stream
        .set_write_timeout(Some(COMMAND_TIMEOUT))
        .map_err(fail)?;
    let mut out = Vec::new();
    for args in commands {
        let args = args.as_ref();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&out).map_err(fail)?;
    let mut reader = BufReader::new(stream);
    (0..commands.len())
        .map(|_| read_reply(&mut reader).map_err(|e| format!("127.0.0.1:{port}: {e}")))
        .collect()
}

/// [`command`] with a status or bulk reply expected: its text, or `Err` with
/// the command and the error reply.
pub(super) fn text<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Result<String, String> {
    command(port, args)?.text().map_err(|e| {
        let shown: Vec<_> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .collect();
        format!("`{}` on port {port}: {e}", shown.join(" "))
    })
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "truncated reply: {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    line.truncate(line.len() - 2);
    let Some((&kind, rest)) = line.split_first() else {
        return Err("empty reply line".to_owned());
    };
    let rest = String::from_utf8_lossy(rest).into_owned();
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|e| format!("bad number {s:?} in a reply: {e}"))
    };
    match kind {
        b'+' => Ok(Reply::Status(rest)),
        b'-' => Ok(Reply::Error(rest)),
        b':' => Ok(Reply::Int(number(&rest)?)),
        b'$' => {
            let Ok(len) = usize::try_from(number(&rest)?) else {
                return Ok(Reply::Nil);
            };
            let mut buf = vec![0u8; len + 2];
            reader.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(len);
            Ok(Reply::Bulk(buf))
        }
        b'*' => {
            let Ok(len) = usize::try_from(number(&rest)?) else {
                return Ok(Reply::Nil);
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        other => Err(format!("unknown reply type {:?}", char::from(other))),
    }
}

/// The value of `key` in an `INFO` reply (`key:value` lines).
pub(super) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// `INFO commandstats` of the server at `port` as command → calls
/// (subcommands as Redis names them: `cluster|info`).
pub(super) fn commandstats(port: u16) -> Result<std::collections::HashMap<String, u64>, String> {
    let info = text(port, &["INFO", "commandstats"])?;
    let mut calls = std::collections::HashMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no calls= in INFO commandstats line {line:?}"))?;
        calls.insert(name.to_owned(), n);
    }
    Ok(calls)
}

/// `s` as an [`OsString`], for argument lists.
pub(super) fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}
