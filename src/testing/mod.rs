//! Test fixtures shared by the unit tests and the integration tests, all
//! real processes on free loopback ports, each in its own temporary
//! directory, killed and removed on drop:
//!
//! - [`RedisServer`]: one `redis-server`.
//! - [`RedisCluster`] (`cluster`): a Redis Cluster, 3 primaries and 3
//!   replicas by default, with kill, failover, slot migration and
//!   resharding.
//! - [`RedisSentinels`] (`sentinel`): a primary, 2 replicas and 3
//!   `redis-sentinel`s, with kill and failover.
//! - [`TlsRedis`] (`tls`): a `redis-server` speaking TLS with certificates
//!   made for the test (CA, server, client).
//! - [`GameRecords`] (`records`): log records of made-up games, valid for
//!   the replay.
//!
//! Tests that need Redis **fail** when `redis-server`, `redis-cli` or
//! `redis-sentinel` is missing; they never skip silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
mod process;
pub mod records;
pub mod sentinel;
pub mod tls;

pub use cluster::RedisCluster;
pub use records::GameRecords;
pub use sentinel::RedisSentinels;
pub use tls::TlsRedis;

/// How long a fresh (or restarted) server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Fresh ports tried when another process grabs the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` child process bound to `127.0.0.1` on a free port, with
/// snapshots off and its own data directory. Killed (and the directory
/// removed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server without persistence (fast; data dies with the process).
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// Starts a server with the append-only file on and fsynced before every
    /// reply (`appendfsync always`), so every acknowledged write survives
    /// [`RedisServer::kill9`] + [`RedisServer::restart`]. (With `everysec`,
    /// Redis may answer a write it has not yet written to the file when an
    /// fsync runs long, and `kill -9` then loses it: a busy machine did.)
    pub fn start_with_aof() -> RedisServer {
        RedisServer::launch(true)
    }

    fn launch(aof: bool) -> RedisServer {
        let dir = process::temp_dir("redis");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                aof,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                // Another process took the port between our probe and the
                // server's bind: try another one.
                Err(e) => {
                    last_error = e;
                    server.dir = PathBuf::new(); // keep `dir` for the next try
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts: {last_error}");
    }

    /// Starts the process on `self.port` and waits until it answers `PING`.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            // A replica made with REPLICAOF syncs at once, not after the
            // default 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found: install it with `apt-get install redis-server` or run ./scripts/test"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            if answers_ping(addr) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with `SIGKILL` (no shutdown, no final save) and waits
    /// for it to die.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (with AOF on,
    /// the data is still there) and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart: {e}");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port the OS just handed out (and released) on loopback.
fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot find a free loopback port: {e}"),
    }
}

/// Whether a Redis server at `addr` answers `+PONG` (not `-LOADING`).
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
