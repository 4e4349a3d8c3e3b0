//! Real Redis Sentinels for tests: one primary and two replicas
//! (`redis-server --replicaof`), watched by three `redis-sentinel`
//! processes with quorum 2, all on free loopback ports.
//!
//! Every wait is bounded (30 s); a set-up that does not get there panics
//! with what it saw and the tail of every process's log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::process::{self, Daemon, Ports, Reply, WAIT, os};

/// Replicas of the first primary.
const REPLICAS: usize = 2;
/// Sentinels watching it.
const SENTINELS: usize = 3;

/// One primary, two replicas and three sentinels (`sentinel monitor <name>
/// 127.0.0.1 <port> 2`, `down-after-milliseconds 1000`, `failover-timeout
/// 5000`), each process in its own directory under one temporary directory,
/// each sentinel with its own writable config file (sentinels rewrite it).
/// Everything is killed and removed on drop, also when a test panics.
#[derive(Debug)]
pub struct RedisSentinels {
    name: String,
    root: PathBuf,
    /// The first primary, then its replicas (roles change on failover).
    servers: Vec<Daemon>,
    sentinels: Vec<Daemon>,
}

impl RedisSentinels {
    /// Starts the servers, waits until the primary has both replicas
    /// connected (`connected_slaves:2`, each replica's link up), then starts
    /// the sentinels and waits until each one sees the master as `master`
    /// with 2 replicas and knows the 2 other sentinels.
    ///
    /// Panics when `master_name` is not a plain name (`[A-Za-z0-9._-]+`),
    /// when a binary is missing, or when a step takes more than 30 s.
    pub fn start(master_name: &str) -> RedisSentinels {
        assert!(
            !master_name.is_empty()
                && master_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "the master name {master_name:?} must match [A-Za-z0-9._-]+"
        );
        // Built before the first process, so a panic anywhere below still
        // kills what was started and removes the directories.
        let mut set = RedisSentinels {
            name: master_name.to_owned(),
            root: process::temp_dir("redis-sentinel"),
            servers: Vec::new(),
            sentinels: Vec::new(),
        };
        let mut ports = Ports::default();
        let primary = Daemon::start(
            "redis-server",
            &set.root,
            "server",
            &mut ports,
            false,
            |port, dir, log| server_args(port, dir, log, None),
        );
        let primary_port = primary.port();
        set.servers.push(primary);
        for _ in 0..REPLICAS {
            let replica = Daemon::start(
                "redis-server",
                &set.root,
                "server",
                &mut ports,
                false,
                |port, dir, log| server_args(port, dir, log, Some(primary_port)),
            );
            set.servers.push(replica);
        }
        set.wait("the replicas to connect", || {
            set.check_replication(primary_port)
        });
        for _ in 0..SENTINELS {
            let name = set.name.clone();
            let sentinel = Daemon::start(
                "redis-sentinel",
                &set.root,
                "sentinel",
                &mut ports,
                false,
                |port, dir, log| sentinel_args(port, dir, log, &name, primary_port),
            );
            set.sentinels.push(sentinel);
        }
        set.wait(
            "every sentinel to know the master, its replicas and the other sentinels",
            || set.check_sentinels(),
        );
        set
    }

    /// The name the sentinels monitor the primary under.
    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:<port>` of every running sentinel.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinel_ports()
            .into_iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    /// `redis://127.0.0.1:<port>/` of every running sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The ports of the running sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        running(&self.sentinels)
    }

    /// The ports of the running `redis-server`s (the primary and the
    /// replicas, in start order).
    pub fn server_ports(&self) -> Vec<u16> {
        running(&self.servers)
    }

    /// The ports of the running servers other than the current primary.
    pub fn replica_ports(&self) -> Vec<u16> {
        let primary = self.primary_port();
        self.server_ports()
            .into_iter()
            .filter(|&p| p != primary)
            .collect()
    }

    /// The primary's port, as the first sentinel that answers reports it
    /// (`SENTINEL get-master-addr-by-name`).
    pub fn primary_port(&self) -> u16 {
        let mut errors = Vec::new();
        for sentinel in self.sentinel_ports() {
            match self.reported_primary(sentinel) {
                Ok(port) => return port,
                Err(e) => errors.push(e),
            }
        }
        self.fail(&format!("no sentinel reports the primary: {errors:?}"))
    }

    /// `redis://127.0.0.1:<port>/` of the primary the sentinels report.
    pub fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.primary_port())
    }

    /// Kills the current primary with `SIGKILL`, waits for the process to
    /// die, and returns its port.
    pub fn kill9_primary(&mut self) -> u16 {
        let port = self.primary_port();
        match self
            .servers
            .iter_mut()
            .find(|s| s.port() == port && s.alive())
        {
            Some(server) => server.kill9(),
            None => self.fail(&format!(
                "the sentinels report {port} as primary, which is not a running server of ours"
            )),
        }
        port
    }

    /// Waits (at most 30 s) until every running sentinel reports the same
    /// primary, not `old_port`, that server says `role:master`, and every
    /// other running server replicates it with its link up; returns its
    /// port.
    pub fn wait_for_new_primary(&self, old_port: u16) -> u16 {
        self.wait(&format!("a new primary instead of {old_port}"), || {
            let mut reported = Vec::new();
            for sentinel in self.sentinel_ports() {
                reported.push(self.reported_primary(sentinel)?);
            }
            let new = *reported.first().ok_or("no sentinel is running")?;
            if new == old_port || reported.iter().any(|&p| p != new) {
                return Err(format!("the sentinels report {reported:?}"));
            }
            self.check_replication(new)?;
            Ok(new)
        })
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>` (a server or a
    /// sentinel; with `-e`: an error reply fails) and returns its output,
    /// trailing newline trimmed. Panics on failure or after 30 s.
    pub fn cli<S: AsRef<str>>(&self, port: u16, args: &[S]) -> String {
        match self.try_cli(port, args) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`RedisSentinels::cli`] that returns the failure instead of panicking.
    pub fn try_cli<S: AsRef<str>>(&self, port: u16, args: &[S]) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        process::redis_cli(port, &args, WAIT)
    }

    /// The primary's port as the sentinel at `sentinel` reports it.
    fn reported_primary(&self, sentinel: u16) -> Result<u16, String> {
        let reply = process::command(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", &self.name],
        )?;
        let Reply::Array(addr) = reply else {
            return Err(format!(
                "sentinel {sentinel}: get-master-addr-by-name gave {reply:?}"
            ));
        };
        match addr.as_slice() {
            [ip, port] => {
                let (ip, port) = (ip.clone().text()?, port.clone().text()?);
                if ip != "127.0.0.1" {
                    return Err(format!("sentinel {sentinel} reports {ip}:{port}"));
                }
                port.parse()
                    .map_err(|e| format!("sentinel {sentinel}: port {port:?}: {e}"))
            }
            _ => Err(format!(
                "sentinel {sentinel}: get-master-addr-by-name gave {addr:?}"
            )),
        }
    }

    /// `Ok` when `primary` says `role:master` and every other running
    /// server replicates it with its link up.
    fn check_replication(&self, primary: u16) -> Result<(), String> {
        let info = process::text(primary, &["INFO", "replication"])?;
        let role = process::info_field(&info, "role");
        if role != Some("master") {
            return Err(format!("{primary}: role is {role:?}"));
        }
        let replicas: Vec<u16> = self
            .server_ports()
            .into_iter()
            .filter(|&p| p != primary)
            .collect();
        for replica in &replicas {
            let info = process::text(*replica, &["INFO", "replication"])?;
            let master = process::info_field(&info, "master_port");
            let link = process::info_field(&info, "master_link_status");
            if master != Some(primary.to_string().as_str()) || link != Some("up") {
                return Err(format!(
                    "replica {replica}: master_port {master:?}, master_link_status {link:?}"
                ));
            }
        }
        let connected = process::info_field(&info, "connected_slaves");
        if connected != Some(replicas.len().to_string().as_str()) {
            return Err(format!("{primary}: connected_slaves is {connected:?}"));
        }
        Ok(())
    }

    /// `Ok` when every sentinel sees the master as `master` with all
    /// replicas and knows every other sentinel.
    fn check_sentinels(&self) -> Result<(), String> {
        for sentinel in self.sentinel_ports() {
            let reply = process::command(sentinel, &["SENTINEL", "master", &self.name])?;
            let Reply::Array(fields) = reply else {
                return Err(format!(
                    "sentinel {sentinel}: SENTINEL master gave {reply:?}"
                ));
            };
            let fields: HashMap<String, String> = fields
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k.clone().text().ok()?, v.clone().text().ok()?)),
                    _ => None,
                })
                .collect();
            for (key, want) in [
                ("flags", "master".to_owned()),
                ("num-slaves", REPLICAS.to_string()),
                ("num-other-sentinels", (SENTINELS - 1).to_string()),
            ] {
                let got = fields.get(key).map(String::as_str);
                if got != Some(want.as_str()) {
                    return Err(format!("sentinel {sentinel}: {key} is {got:?}, not {want}"));
                }
            }
        }
        Ok(())
    }

    fn wait<T>(&self, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        match process::wait_for(WAIT, probe) {
            Ok(value) => value,
            Err(e) => self.fail(&format!("waiting for {what}: {e}")),
        }
    }

    /// Panics with `message` and every process's log tail.
    fn fail(&self, message: &str) -> ! {
        panic!(
            "redis sentinels ({}): {message}\nserver logs (last lines):{}\nsentinel logs (last lines):{}",
            self.name,
            process::log_tails(&self.servers),
            process::log_tails(&self.sentinels)
        );
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for daemon in self.sentinels.iter_mut().chain(&mut self.servers) {
            daemon.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn running(daemons: &[Daemon]) -> Vec<u16> {
    daemons
        .iter()
        .filter(|d| d.alive())
        .map(Daemon::port)
        .collect()
}

/// The command line of a data server (a replica of `primary` when given).
fn server_args(port: u16, dir: &Path, log: &Path, primary: Option<u16>) -> Vec<std::ffi::OsString> {
    let mut args = vec![
        os("--port"),
        os(port.to_string()),
        os("--bind"),
        os("127.0.0.1"),
        os("--save"),
        os(""),
        os("--appendonly"),
        os("no"),
        // Replicas sync at once, not after the default 5 s wait for more.
        os("--repl-diskless-sync-delay"),
        os("0"),
        os("--dir"),
        dir.as_os_str().to_owned(),
        os("--logfile"),
        log.as_os_str().to_owned(),
    ];
    if let Some(primary) = primary {
        args.extend([os("--replicaof"), os("127.0.0.1"), os(primary.to_string())]);
    }
    args
}

/// Writes `<dir>/sentinel.conf` (the sentinel rewrites it: its own file,
/// writable) and returns the sentinel's command line.
fn sentinel_args(
    port: u16,
    dir: &Path,
    log: &Path,
    name: &str,
    primary: u16,
) -> Vec<std::ffi::OsString> {
    let config = dir.join("sentinel.conf");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir \"{}\"\n\
         logfile \"{}\"\n\
         sentinel resolve-hostnames no\n\
         sentinel monitor {name} 127.0.0.1 {primary} 2\n\
         sentinel down-after-milliseconds {name} 1000\n\
         sentinel failover-timeout {name} 5000\n\
         sentinel parallel-syncs {name} 1\n",
        dir.display(),
        log.display()
    );
    if let Err(e) = std::fs::write(&config, text) {
        panic!("cannot write the sentinel config {}: {e}", config.display());
    }
    vec![config.into_os_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_start_and_agree_on_the_primary() {
        let set = RedisSentinels::start("scores");
        assert_eq!(set.master_name(), "scores");
        assert_eq!(set.sentinel_addrs().len(), 3);
        assert_eq!(set.sentinel_urls().len(), 3);
        let servers = set.server_ports();
        assert_eq!(servers.len(), 3);
        assert_eq!(set.primary_port(), servers[0]);
        assert_eq!(set.replica_ports(), servers[1..]);
        for sentinel in set.sentinel_ports() {
            let addr = set.cli(sentinel, &["SENTINEL", "get-master-addr-by-name", "scores"]);
            assert_eq!(addr, format!("127.0.0.1\n{}", servers[0]));
            let others = set.cli(sentinel, &["SENTINEL", "sentinels", "scores"]);
            assert_eq!(others.matches("runid").count(), 2, "{others}");
        }
        // The replicas really replicate the primary.
        let replies = process::pipeline(
            servers[0],
            &[vec!["SET", "game", "1"], vec!["WAIT", "2", "5000"]],
        )
        .expect("SET + WAIT");
        assert_eq!(replies, [Reply::Status("OK".into()), Reply::Int(2)]);
        for &replica in &servers[1..] {
            assert_eq!(set.cli(replica, &["GET", "game"]), "1");
        }
    }

    #[test]
    fn kill9_primary_promotes_one_of_the_old_replicas() {
        let mut set = RedisSentinels::start("hub");
        let old = set.primary_port();
        let old_replicas = set.replica_ports();
        // Acknowledged by both replicas before the kill: it must survive.
        let replies =
            process::pipeline(old, &[vec!["SET", "score", "3"], vec!["WAIT", "2", "5000"]])
                .expect("SET + WAIT");
        assert_eq!(replies, [Reply::Status("OK".into()), Reply::Int(2)]);

        assert_eq!(set.kill9_primary(), old);
        assert!(set.try_cli(old, &["PING"]).is_err());
        let new = set.wait_for_new_primary(old);

        assert_ne!(new, old);
        assert!(
            old_replicas.contains(&new),
            "{new} is not in {old_replicas:?}"
        );
        assert_eq!(set.primary_port(), new);
        assert!(
            set.cli(new, &["INFO", "replication"])
                .contains("role:master")
        );
        assert_eq!(set.cli(new, &["GET", "score"]), "3");
        assert_eq!(set.cli(new, &["SET", "score", "4"]), "OK");
        let other = *old_replicas
            .iter()
            .find(|&&p| p != new)
            .expect("two replicas");
        assert_eq!(set.replica_ports(), [other]);
        let replies = process::pipeline(new, &[vec!["INCR", "score"], vec!["WAIT", "1", "5000"]])
            .expect("INCR + WAIT");
        assert_eq!(replies, [Reply::Int(5), Reply::Int(1)]);
        assert_eq!(set.cli(other, &["GET", "score"]), "5");
    }
}
