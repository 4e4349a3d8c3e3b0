//! A private Redis Cluster for `--scenario cluster`: `redis-server
//! --cluster-enabled yes` processes on free loopback ports, each in its own
//! directory without persistence, joined with `redis-cli --cluster create
//! ... --cluster-replicas R --cluster-yes`, and waited for until every node
//! agrees the cluster is whole. Also what the run asks the cluster later:
//! which primary serves which slots ([`shards`]), which slot a game's keys
//! hash to ([`game_slot`]), and each primary's `INFO commandstats`.

use std::{
    collections::BTreeMap,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use tokio::process::Command;

use crate::{
    launch::{Started, forget_child, free_port, log_tail, ping_redis, spawn_logged},
    report::ShardReport,
    resp,
};

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// How long the cluster may take to form (and each node to answer `PING`).
const FORM_WAIT: Duration = Duration::from_secs(30);

/// `cluster-node-timeout` in ms: a dead primary is failed over after about
/// this long (plus an election).
const NODE_TIMEOUT_MS: &str = "2000";

/// Highest client port used: the cluster bus listens on port + 10000.
const MAX_PORT: u16 = 55_000;

/// What cluster to start.
#[derive(Clone, Debug)]
pub(crate) struct ClusterPlan {
    /// The `redis-server` binary.
    pub(crate) redis_bin: PathBuf,
    /// The `redis-cli` binary (for `--cluster create`).
    pub(crate) cli_bin: PathBuf,
    /// Primaries (shards).
    pub(crate) primaries: usize,
    /// Replicas per primary.
    pub(crate) replicas: usize,
}

/// One started cluster node.
#[derive(Debug)]
pub(crate) struct ClusterNode {
    /// Its client port on 127.0.0.1.
    pub(crate) port: u16,
    /// The process.
    pub(crate) started: Started,
}

/// One shard as the cluster sees it: its primary and the slots it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    /// The primary's port.
    pub(crate) primary: u16,
    /// Its replicas' ports.
    pub(crate) replicas: Vec<u16>,
    /// The slot ranges it serves.
    pub(crate) slots: Vec<RangeInclusive<u16>>,
}

impl Shard {
    /// True when this shard serves `slot`.
    pub(crate) fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }
}

/// Starts the cluster `plan` asks for under `dir` and waits until it is
/// whole. On failure the started nodes are killed (on drop).
pub(crate) async fn start(plan: &ClusterPlan, dir: &Path) -> Result<Vec<ClusterNode>> {
    let total = plan.primaries * (1 + plan.replicas);
    let mut nodes: Vec<ClusterNode> = Vec::with_capacity(total);
    for _ in 0..total {
        nodes.push(start_node(&plan.redis_bin, dir, &nodes).await?);
    }
    let mut cmd = Command::new(&plan.cli_bin);
    cmd.arg("--cluster").arg("create");
    for node in &nodes {
        cmd.arg(format!("127.0.0.1:{}", node.port));
    }
    cmd.args([
        "--cluster-replicas",
        &plan.replicas.to_string(),
        "--cluster-yes",
    ])
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let output = tokio::time::timeout(FORM_WAIT, cmd.output())
        .await
        .with_context(|| {
            format!(
                "{} --cluster create did not finish within {FORM_WAIT:?}",
                plan.cli_bin.display()
            )
        })?
        .with_context(|| {
            format!(
                "running {} --cluster create: is redis-cli installed? (apt-get install \
                 redis-tools, or give --redis-cli-bin)",
                plan.cli_bin.display()
            )
        })?;
    ensure!(
        output.status.success(),
        "{} --cluster create exited with {}:\n{}{}",
        plan.cli_bin.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let started = Instant::now();
    loop {
        let last = match check_whole(&ports, plan.primaries).await {
            Ok(()) => return Ok(nodes),
            Err(e) => e,
        };
        if started.elapsed() > FORM_WAIT {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.started.name, log_tail(&n.started.log)))
                .collect();
            bail!(
                "the Redis Cluster did not form within {FORM_WAIT:?}: {last:#}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts one cluster node on a free port (whose bus port, +10000, is free
/// too) and waits until it answers `PING`.
async fn start_node(bin: &Path, dir: &Path, others: &[ClusterNode]) -> Result<ClusterNode> {
    let mut last_error = String::new();
    for _attempt in 0..20 {
        let port = free_port()?;
        let taken = others.iter().any(|n| n.port.abs_diff(port) == 10_000);
        if port > MAX_PORT
            || taken
            || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err()
        {
            continue;
        }
        let home = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(home.join("nodes.conf"))
            .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // Replicas sync at once, not after the default 5 s wait.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&home)
            .current_dir(&home)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let name = format!("redis :{port}");
        let log = dir.join(format!("redis-{port}.log"));
        let mut started = spawn_logged(cmd, &name, &log).map_err(|e| {
            e.context(format!(
                "is {} installed? (apt-get install redis-server, or give --redis-bin)",
                bin.display()
            ))
        })?;
        let since = Instant::now();
        loop {
            if ping_redis(port).await {
                return Ok(ClusterNode { port, started });
            }
            if let Ok(Some(status)) = started.child.try_wait() {
                forget_child(started.pid);
                last_error = format!("{name} exited with {status}:\n{}", log_tail(&log));
                break;
            }
            if since.elapsed() > FORM_WAIT {
                bail!(
                    "{name} did not answer PING within {FORM_WAIT:?}:\n{}",
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bail!("no cluster node would start: {last_error}")
}

/// `Ok` when every node says `cluster_state:ok` with all slots assigned and
/// ok, knows every node, sees `primaries` shards, all nodes agree on them,
/// and every replica's link to its primary is up.
async fn check_whole(ports: &[u16], primaries: usize) -> Result<()> {
    let mut first: Option<(u16, Vec<Shard>)> = None;
    for &port in ports {
        let info = resp::text(port, &["CLUSTER", "INFO"]).await?;
        for (key, want) in [
            ("cluster_state", "ok".to_string()),
            ("cluster_slots_assigned", SLOTS.to_string()),
            ("cluster_slots_ok", SLOTS.to_string()),
            ("cluster_known_nodes", ports.len().to_string()),
        ] {
            let got = resp::info_field(&info, key);
            ensure!(
                got == Some(want.as_str()),
                "port {port}: {key} is {got:?}, not {want}"
            );
        }
        let seen = shards(port).await?;
        ensure!(
            seen.len() == primaries,
            "port {port} sees {} shards, not {primaries}",
            seen.len()
        );
        match &first {
            None => first = Some((port, seen)),
            Some((other, theirs)) => ensure!(
                *theirs == seen,
                "ports {other} and {port} disagree about the shards"
            ),
        }
        let replication = resp::text(port, &["INFO", "replication"]).await?;
        if resp::info_field(&replication, "role") == Some("slave") {
            let link = resp::info_field(&replication, "master_link_status");
            ensure!(
                link == Some("up"),
                "replica {port}: master_link_status is {link:?}"
            );
        }
    }
    Ok(())
}

/// The shards as the node on `port` sees them, in slot order. Primaries
/// flagged `fail` are left out; a replica whose primary failed is not
/// listed under anyone.
pub(crate) async fn shards(port: u16) -> Result<Vec<Shard>> {
    Ok(parse_nodes(&resp::text(port, &["CLUSTER", "NODES"]).await?))
}

/// The shards from the text of `CLUSTER NODES`.
fn parse_nodes(text: &str) -> Vec<Shard> {
    // id → (port, flags, primary id, slots)
    let mut lines = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let address = fields[1].split(['@', ',']).next().unwrap_or("");
        let Some(port) = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let flags: Vec<&str> = fields[2].split(',').collect();
        let slots: Vec<RangeInclusive<u16>> = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                None => {
                    let one: u16 = s.parse().ok()?;
                    Some(one..=one)
                }
            })
            .collect();
        lines.push((fields[0], port, flags, fields[3], slots));
    }
    let mut shards: Vec<Shard> = lines
        .iter()
        .filter(|(_, _, flags, _, slots)| {
            flags.contains(&"master") && !flags.contains(&"fail") && !slots.is_empty()
        })
        .map(|(id, port, _, _, slots)| Shard {
            primary: *port,
            replicas: {
                let mut replicas: Vec<u16> = lines
                    .iter()
                    .filter(|(_, _, flags, of, _)| of == id && !flags.contains(&"fail"))
                    .map(|(_, p, ..)| *p)
                    .collect();
                replicas.sort_unstable();
                replicas
            },
            slots: slots.clone(),
        })
        .collect();
    shards.sort_by_key(|s| s.slots.first().map_or(0, |r| *r.start()));
    shards
}

/// The slot of game `id`'s keys: the hub names them `<prefix>:{<id>}:...`,
/// so the hash tag is the game id.
pub(crate) fn game_slot(id: &str) -> u16 {
    crc16(id.as_bytes()) % SLOTS
}

/// CRC-16/XMODEM, the hash of Redis Cluster key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Calls per command of the node on `port` (`INFO commandstats`), keyed by
/// the command's name as Redis gives it (`evalsha`, `cluster|nodes`).
pub(crate) async fn commandstats(port: u16) -> Result<BTreeMap<String, u64>> {
    Ok(parse_commandstats(
        &resp::text(port, &["INFO", "commandstats"]).await?,
    ))
}

/// `cmdstat_<name>:calls=N,...` lines into name → N.
fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// The run's view of its cluster: the shards at the window's start, which
/// shard each game lives on, and the primaries' command counts.
#[derive(Debug)]
pub(crate) struct Probe {
    /// Every node as `(port, pid)`.
    nodes: Vec<(u16, u32)>,
    /// The shards when the probe was made, in slot order.
    pub(crate) shards: Vec<Shard>,
    /// Per game index: its shard's index in `shards`.
    game_shard: Vec<Option<usize>>,
}

impl Probe {
    /// Reads the shards from the first node that answers and places every
    /// game of `game_ids` on one.
    pub(crate) async fn new(nodes: &[(u16, u32)], game_ids: &[String]) -> Result<Self> {
        let mut last = None;
        for &(port, _) in nodes {
            match shards(port).await {
                Ok(shards) => {
                    let game_shard = game_ids
                        .iter()
                        .map(|id| {
                            let slot = game_slot(id);
                            shards.iter().position(|s| s.serves(slot))
                        })
                        .collect();
                    return Ok(Self {
                        nodes: nodes.to_vec(),
                        shards,
                        game_shard,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the cluster has no nodes")))
    }

    /// Games (indexes into the run's ids) on shard `shard`, as flags.
    pub(crate) fn on_shard(&self, shard: usize) -> Vec<bool> {
        self.game_shard.iter().map(|s| *s == Some(shard)).collect()
    }

    /// How many games live on shard `shard`.
    pub(crate) fn games_on(&self, shard: usize) -> usize {
        self.game_shard
            .iter()
            .filter(|s| **s == Some(shard))
            .count()
    }

    /// The shard holding most games (the first of equals).
    pub(crate) fn busiest_shard(&self) -> usize {
        let mut best = 0;
        for shard in 1..self.shards.len() {
            if self.games_on(shard) > self.games_on(best) {
                best = shard;
            }
        }
        best
    }

    /// The process id of the node on `port`.
    pub(crate) fn pid_of(&self, port: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, pid)| *pid)
    }

    /// `INFO commandstats` of each shard's primary (as of the probe).
    pub(crate) async fn commandstats(&self) -> Vec<Result<BTreeMap<String, u64>>> {
        let mut all = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            all.push(commandstats(shard.primary).await);
        }
        all
    }

    /// The port of the primary serving shard `shard`'s first slot now, asked
    /// of any node other than `dead` that answers.
    pub(crate) async fn primary_now(&self, shard: usize, dead: u16) -> Option<u16> {
        let slot = *self.shards.get(shard)?.slots.first()?.start();
        for &(port, _) in &self.nodes {
            if port == dead {
                continue;
            }
            if let Ok(now) = shards(port).await {
                return now.iter().find(|s| s.serves(slot)).map(|s| s.primary);
            }
        }
        None
    }

    /// Per shard: games, events applied in the window (`accepted[game]`),
    /// and the primaries' commands between `before` and `after`.
    pub(crate) fn shard_reports(
        &self,
        accepted: &[u64],
        before: &[Result<BTreeMap<String, u64>>],
        after: &[Result<BTreeMap<String, u64>>],
    ) -> Vec<ShardReport> {
        self.shards
            .iter()
            .enumerate()
            .map(|(index, shard)| {
                let events: u64 = self
                    .game_shard
                    .iter()
                    .zip(accepted)
                    .filter(|(s, _)| **s == Some(index))
                    .map(|(_, n)| *n)
                    .sum();
                let mut report = ShardReport {
                    primary_port: shard.primary,
                    replica_ports: shard.replicas.clone(),
                    slots: shard
                        .slots
                        .iter()
                        .map(|r| format!("{}-{}", r.start(), r.end()))
                        .collect::<Vec<_>>()
                        .join(","),
                    games: self.games_on(index),
                    events_applied: events,
                    ..ShardReport::default()
                };
                match (before.get(index), after.get(index)) {
                    (Some(Ok(before)), Some(Ok(after))) => {
                        let calls = calls_between(before, after);
                        let total: u64 = calls.values().sum();
                        report.commands = Some(total);
                        if events > 0 {
                            let per = |n: u64| n as f64 / events as f64;
                            report.commands_per_event = Some(per(total));
                            report.per_event =
                                calls.into_iter().map(|(k, n)| (k, per(n))).collect();
                        }
                    }
                    (Some(Err(e)), _) | (_, Some(Err(e))) => {
                        report.problem = Some(format!("no command counts: {e:#}"));
                    }
                    _ => report.problem = Some("no command counts".into()),
                }
                report
            })
            .collect()
    }
}

/// Calls per command from `before` to `after`, without the run's own
/// `info` (and without commands that did not run).
fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, &n)| {
            let delta = n.saturating_sub(before.get(name).copied().unwrap_or(0));
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Shard, calls_between, crc16, game_slot, parse_commandstats, parse_nodes};
    use std::collections::BTreeMap;

    #[test]
    fn calls_in_the_window_leave_out_the_runs_own_info() {
        let before: BTreeMap<String, u64> = [("evalsha".into(), 10), ("info".into(), 3)]
            .into_iter()
            .collect();
        let after: BTreeMap<String, u64> = [
            ("evalsha".into(), 25),
            ("info".into(), 5),
            ("spublish".into(), 4),
            ("get".into(), 0),
        ]
        .into_iter()
        .collect();
        let calls = calls_between(&before, &after);
        assert_eq!(
            calls.into_iter().collect::<Vec<_>>(),
            [("evalsha".to_string(), 15), ("spublish".to_string(), 4)]
        );
    }

    #[test]
    fn slots_are_redis_slots() {
        // The check value of CRC-16/XMODEM, and slots Redis documents.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(game_slot("foo"), 12182);
        assert_eq!(game_slot("bar"), 5061);
    }

    #[test]
    fn the_default_games_land_on_every_shard_of_three() {
        let thirds = |slot: u16| usize::from(slot) * 3 / 16384;
        let mut per_shard = [0; 3];
        for n in 1..=10 {
            per_shard[thirds(game_slot(&format!("lt:g{n}")))] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    }

    #[test]
    fn cluster_nodes_become_shards() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922 [5462->-c3]
c3 127.0.0.1:7003@17003,host master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master,fail - 0 0 5 disconnected
";
        let shards = parse_nodes(text);
        assert_eq!(
            shards,
            vec![
                Shard {
                    primary: 7001,
                    replicas: vec![7004],
                    slots: vec![0..=5460]
                },
                Shard {
                    primary: 7002,
                    replicas: vec![],
                    slots: vec![5461..=10922]
                },
                Shard {
                    primary: 7003,
                    replicas: vec![],
                    slots: vec![10923..=16383]
                },
            ]
        );
        assert!(shards[1].serves(6000) && !shards[1].serves(5460));
    }

    #[test]
    fn commandstats_give_calls_per_command() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=40,usec_per_call=3.3\r\n\
                    cmdstat_cluster|nodes:calls=2,usec=1\r\n";
        let stats = parse_commandstats(text);
        assert_eq!(stats.get("evalsha"), Some(&12));
        assert_eq!(stats.get("cluster|nodes"), Some(&2));
        assert_eq!(stats.len(), 2);
    }
}
