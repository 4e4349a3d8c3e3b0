//! A real Redis Cluster for tests: `redis-server` processes in cluster mode
//! on free loopback ports, joined with `redis-cli --cluster create`, with
//! the operations a cluster-aware client has to survive: killing a node,
//! failover, moving a slot with its keys, resharding.
//!
//! Every wait is bounded (30 s); a cluster that does not get there
//! panics with the state it was in and the tail of every node's log.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::process::{self, Daemon, Ports, Reply, WAIT, os};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// Keys moved per `MIGRATE` by [`RedisCluster::migrate_slot`].
const MIGRATE_BATCH: usize = 100;

/// A Redis Cluster of `redis-server` processes on `127.0.0.1`, each in its
/// own directory under one temporary directory, with the append-only file
/// fsynced before every reply and `cluster-node-timeout 2000`.
///
/// Nodes are named by their client port (the bus port is `port + 10000`).
/// All processes are killed and the directories removed on drop, also when
/// a test panics.
#[derive(Debug)]
pub struct RedisCluster {
    root: PathBuf,
    nodes: Vec<Daemon>,
    /// Node id by port (an id never changes).
    ids: HashMap<u16, String>,
    /// For each node killed with [`RedisCluster::kill9`]: its replicas then.
    killed_replicas: HashMap<u16, Vec<u16>>,
}

impl RedisCluster {
    /// Starts 3 primaries with one replica each (6 nodes) and waits until
    /// the cluster is stable: see [`RedisCluster::start_with`].
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(3, 1)
    }

    /// Starts `primaries * (1 + replicas_per_primary)` nodes, joins them with
    /// `redis-cli --cluster create ... --cluster-replicas N`, and waits until
    /// every node says `cluster_state:ok` with all 16384 slots assigned and
    /// ok, every node knows every other, all nodes agree on who owns which
    /// slot, and every replica's link to its primary is up.
    ///
    /// Panics when `primaries < 3` (Redis' minimum), when a binary is
    /// missing, or when the cluster does not get there within 30 s.
    pub fn start_with(primaries: usize, replicas_per_primary: usize) -> RedisCluster {
        assert!(
            primaries >= 3,
            "a Redis Cluster needs at least 3 primaries, not {primaries}"
        );
        let total = primaries * (1 + replicas_per_primary);
        // Built before the first process, so a panic anywhere below still
        // kills what was started and removes the directories.
        let mut cluster = RedisCluster {
            root: process::temp_dir("redis-cluster"),
            nodes: Vec::with_capacity(total),
            ids: HashMap::new(),
            killed_replicas: HashMap::new(),
        };
        let mut ports = Ports::default();
        for _ in 0..total {
            let node = Daemon::start(
                "redis-server",
                &cluster.root,
                "node",
                &mut ports,
                true,
                node_args,
            );
            cluster.nodes.push(node);
        }
        for port in cluster.all_ports().collect::<Vec<_>>() {
            match process::text(port, &["CLUSTER", "MYID"]) {
                Ok(id) => {
                    cluster.ids.insert(port, id);
                }
                Err(e) => cluster.fail(&format!("CLUSTER MYID on port {port}: {e}")),
            }
        }
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(cluster.all_ports().map(|p| format!("127.0.0.1:{p}")));
        args.extend([
            "--cluster-replicas".to_owned(),
            replicas_per_primary.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        let first = cluster.nodes[0].port();
        if let Err(e) = process::redis_cli(first, &args, WAIT) {
            cluster.fail(&format!("redis-cli --cluster create failed: {e}"));
        }
        cluster.wait_stable("the new cluster to be ready");
        cluster
    }

    /// `redis://127.0.0.1:<port>/` of every running node (primaries and
    /// replicas, in start order; killed nodes left out): seeds for a
    /// cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The ports of every running node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive())
            .map(Daemon::port)
            .collect()
    }

    /// The ports of the running nodes that say they are primaries (after a
    /// failover, the promoted replica is one).
    pub fn primaries(&self) -> Vec<u16> {
        self.with_role(true)
    }

    /// The ports of the running nodes that say they are replicas.
    pub fn replicas(&self) -> Vec<u16> {
        self.with_role(false)
    }

    /// The ports of the running replicas of the primary at `primary`.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let id = self.node_id(primary).to_owned();
        self.ports()
            .into_iter()
            .filter(|&p| {
                self.myself(p)
                    .is_ok_and(|me| me.primary_id.as_deref() == Some(id.as_str()))
            })
            .collect()
    }

    /// The cluster node id (40 hex characters) of the node at `port`.
    pub fn node_id(&self, port: u16) -> &str {
        match self.ids.get(&port) {
            Some(id) => id,
            None => panic!("no node of this cluster on port {port}"),
        }
    }

    /// The port of the primary that serves `slot`, as that primary itself
    /// says (`CLUSTER NODES`, its own line). Panics when no running primary
    /// claims it.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        for port in self.ports() {
            if let Ok(me) = self.myself(port)
                && me.is_primary()
                && me.serves(slot)
            {
                return port;
            }
        }
        self.fail(&format!("no running primary serves slot {slot}"))
    }

    /// The slots the node at `port` serves, by its own account (empty for
    /// a replica).
    pub fn slots_of(&self, port: u16) -> Vec<u16> {
        match self.myself(port) {
            Ok(me) => me.slots.into_iter().flatten().collect(),
            Err(e) => self.fail(&format!("CLUSTER NODES on port {port}: {e}")),
        }
    }

    /// The hash slot of `key`, as Redis computes it: CRC16 (XMODEM) of the
    /// key, or of its hash tag (the part between the first `{` and the next
    /// `}`, when not empty), modulo 16384.
    pub fn slot_of(key: impl AsRef<[u8]>) -> u16 {
        crc16(hash_tag(key.as_ref())) % SLOTS
    }

    /// Kills the node at `port` with `SIGKILL` (no shutdown, no final save)
    /// and waits for the process to die. Remembers its replicas for
    /// [`RedisCluster::wait_for_failover`].
    pub fn kill9(&mut self, port: u16) {
        let Some(index) = self
            .nodes
            .iter()
            .position(|n| n.port() == port && n.alive())
        else {
            panic!("kill9: no running node of this cluster on port {port}");
        };
        let replicas = self.replicas_of(port);
        self.killed_replicas.insert(port, replicas);
        self.nodes[index].kill9();
    }

    /// Waits (at most 30 s) until a replica of the primary killed at
    /// `dead_port` has been promoted and serves slots, and the cluster is
    /// stable again (every running node `cluster_state:ok`, all agree on the
    /// slot owners); returns the new primary's port.
    ///
    /// Panics when `dead_port` was not killed with [`RedisCluster::kill9`]
    /// or had no replica then.
    pub fn wait_for_failover(&self, dead_port: u16) -> u16 {
        let Some(replicas) = self.killed_replicas.get(&dead_port) else {
            panic!("wait_for_failover: port {dead_port} was not killed with kill9");
        };
        if replicas.is_empty() {
            panic!("wait_for_failover: port {dead_port} had no replica when it was killed");
        }
        let waited = process::wait_for(WAIT, || {
            let promoted = replicas
                .iter()
                .copied()
                .find(|&r| {
                    self.myself(r)
                        .is_ok_and(|me| me.is_primary() && !me.slots.is_empty())
                })
                .ok_or_else(|| {
                    format!("no replica of {dead_port} ({replicas:?}) is a primary yet")
                })?;
            self.check_stable()?;
            Ok(promoted)
        });
        match waited {
            Ok(port) => port,
            Err(e) => self.fail(&format!("failover of the primary on {dead_port}: {e}")),
        }
    }

    /// Moves `slot` with its keys to the primary at `to`, live, the way the
    /// manual resharding procedure does: `CLUSTER SETSLOT <slot> IMPORTING`
    /// on the target, `MIGRATING` on the source, `MIGRATE ... KEYS` in
    /// batches of 100 until the slot is empty on the source, then `SETSLOT
    /// <slot> NODE <target>` on the target, the source and every other
    /// primary; then waits until all nodes agree. Clients see `ASK`
    /// redirections while it runs. Nothing happens when `to` already serves
    /// the slot.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        assert!(slot < SLOTS, "slot {slot} is out of range (0..{SLOTS})");
        let from = self.primary_of_slot(slot);
        if from == to {
            return;
        }
        if !self.myself(to).is_ok_and(|me| me.is_primary()) {
            self.fail(&format!("migrate_slot: port {to} is not a running primary"));
        }
        let from_id = self.node_id(from).to_owned();
        let to_id = self.node_id(to).to_owned();
        let slot_arg = slot.to_string();
        self.must(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        self.must(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let batch = MIGRATE_BATCH.to_string();
            let keys =
                match process::command(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch]) {
                    Ok(Reply::Array(keys)) => keys,
                    other => self.fail(&format!(
                        "CLUSTER GETKEYSINSLOT {slot} on port {from}: {other:?}"
                    )),
                };
            if keys.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                self.fail(&format!(
                    "migrate_slot: slot {slot} still has keys on {from} after {WAIT:?}"
                ));
            }
            let mut args: Vec<Vec<u8>> = [
                "MIGRATE",
                "127.0.0.1",
                &to.to_string(),
                "",
                "0",
                "5000",
                "KEYS",
            ]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
            for key in keys {
                match key {
                    Reply::Bulk(key) => args.push(key),
                    other => self.fail(&format!("CLUSTER GETKEYSINSLOT gave {other:?}")),
                }
            }
            if let Err(e) = process::text(from, &args) {
                self.fail(&format!("MIGRATE of slot {slot} from {from} to {to}: {e}"));
            }
        }
        let assign = ["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id];
        self.must(to, &assign);
        self.must(from, &assign);
        for primary in self.primaries() {
            if primary != to && primary != from {
                self.must(primary, &assign);
            }
        }
        self.wait_stable(&format!("all nodes to see slot {slot} on port {to}"));
    }

    /// Moves `slots` slots (with their keys) from the primary at `from` to
    /// the one at `to` with `redis-cli --cluster reshard --cluster-from
    /// <id> --cluster-to <id> --cluster-slots N --cluster-yes`, after and
    /// before waiting until all nodes agree; returns the slots that moved.
    pub fn reshard(&self, from: u16, to: u16, slots: u16) -> Vec<u16> {
        self.wait_stable("the cluster to be stable before resharding");
        let before = self.slots_of(to);
        let args = [
            "--cluster".to_owned(),
            "reshard".to_owned(),
            format!("127.0.0.1:{from}"),
            "--cluster-from".to_owned(),
            self.node_id(from).to_owned(),
            "--cluster-to".to_owned(),
            self.node_id(to).to_owned(),
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
        ];
        if let Err(e) = process::redis_cli(from, &args, WAIT) {
            self.fail(&format!("redis-cli --cluster reshard failed: {e}"));
        }
        self.wait_stable(&format!(
            "all nodes to agree after resharding {from} -> {to}"
        ));
        let mut moved = self.slots_of(to);
        moved.retain(|s| !before.contains(s));
        moved
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>` (with `-e`: an error
    /// reply fails) and returns its output, trailing newline trimmed
    /// (raw format: one line per reply element). Panics on failure or
    /// after 30 s.
    pub fn cli<S: AsRef<str>>(&self, port: u16, args: &[S]) -> String {
        match self.try_cli(port, args) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`RedisCluster::cli`] with `-c`: follows `MOVED` and `ASK`, as a
    /// cluster-aware client does.
    pub fn cluster_cli<S: AsRef<str>>(&self, port: u16, args: &[S]) -> String {
        let mut with_c = vec!["-c"];
        with_c.extend(args.iter().map(AsRef::as_ref));
        self.cli(port, &with_c)
    }

    /// [`RedisCluster::cli`] that returns the failure (an error reply, a
    /// dead node) instead of panicking.
    pub fn try_cli<S: AsRef<str>>(&self, port: u16, args: &[S]) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        process::redis_cli(port, &args, WAIT)
    }

    /// `INFO commandstats` of the node at `port`: command → calls, with
    /// subcommands named as Redis does (`cluster|info`). The fixture's own
    /// probes (`ping`, `info`, `cluster|info`, `cluster|nodes`, ...) count
    /// too.
    pub fn commandstats(&self, port: u16) -> HashMap<String, u64> {
        match process::commandstats(port) {
            Ok(stats) => stats,
            Err(e) => self.fail(&format!("INFO commandstats on port {port}: {e}")),
        }
    }

    fn all_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(Daemon::port)
    }

    fn is_running(&self, port: u16) -> bool {
        self.nodes.iter().any(|n| n.port() == port && n.alive())
    }

    fn with_role(&self, primary: bool) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|&p| self.myself(p).is_ok_and(|me| me.is_primary() == primary))
            .collect()
    }

    /// The node's own line of its `CLUSTER NODES`.
    fn myself(&self, port: u16) -> Result<NodeLine, String> {
        view(port)?
            .into_iter()
            .find(|n| n.has_flag("myself"))
            .ok_or_else(|| format!("port {port}: no `myself` line in CLUSTER NODES"))
    }

    /// Runs a command that must not fail.
    fn must(&self, port: u16, args: &[&str]) {
        if let Err(e) = process::text(port, args) {
            self.fail(&e);
        }
    }

    fn wait_stable(&self, what: &str) {
        if let Err(e) = process::wait_for(WAIT, || self.check_stable()) {
            self.fail(&format!("waiting for {what}: {e}"));
        }
    }

    /// `Ok` when every running node says `cluster_state:ok` with all slots
    /// assigned and ok and knows every node, all running nodes agree on
    /// which node serves which slots (the check `redis-cli --cluster`
    /// makes), no slot is on a killed node, and every replica of a running
    /// primary has its link up.
    fn check_stable(&self) -> Result<(), String> {
        let mut first: Option<(u16, SlotOwners)> = None;
        for port in self.ports() {
            let info = process::text(port, &["CLUSTER", "INFO"])?;
            for (key, want) in [
                ("cluster_state", "ok".to_owned()),
                ("cluster_slots_assigned", SLOTS.to_string()),
                ("cluster_slots_ok", SLOTS.to_string()),
                ("cluster_known_nodes", self.nodes.len().to_string()),
            ] {
                let got = process::info_field(&info, key);
                if got != Some(want.as_str()) {
                    return Err(format!("port {port}: {key} is {got:?}, not {want}"));
                }
            }
            let nodes = view(port)?;
            let owners: SlotOwners = nodes
                .iter()
                .filter(|n| n.has_flag("master") && !n.slots.is_empty())
                .map(|n| (n.id.clone(), n.slots.clone()))
                .collect();
            for id in owners.keys() {
                if let Some((dead, _)) = self
                    .ids
                    .iter()
                    .find(|(p, i)| *i == id && !self.is_running(**p))
                {
                    return Err(format!(
                        "port {port} still sees slots on killed node {dead}"
                    ));
                }
            }
            match &first {
                None => first = Some((port, owners)),
                Some((other, theirs)) if *theirs != owners => {
                    return Err(format!(
                        "ports {other} and {port} disagree about the slot owners"
                    ));
                }
                Some(_) => {}
            }
            let me = nodes
                .iter()
                .find(|n| n.has_flag("myself"))
                .ok_or_else(|| format!("port {port}: no `myself` line"))?;
            if let Some(primary_id) = &me.primary_id {
                let primary_alive = self
                    .ids
                    .iter()
                    .any(|(p, id)| id == primary_id && self.is_running(*p));
                if primary_alive {
                    let replication = process::text(port, &["INFO", "replication"])?;
                    let link = process::info_field(&replication, "master_link_status");
                    if link != Some("up") {
                        return Err(format!("replica {port}: master_link_status is {link:?}"));
                    }
                }
            }
        }
        if first.is_none() {
            return Err("no node is running".to_owned());
        }
        Ok(())
    }

    /// Panics with `message` and every node's log tail.
    fn fail(&self, message: &str) -> ! {
        panic!(
            "redis cluster: {message}\nnode logs (last lines):{}",
            process::log_tails(&self.nodes)
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Primary id → the slot ranges it serves, as one node sees the cluster.
type SlotOwners = BTreeMap<String, Vec<RangeInclusive<u16>>>;

/// The command line of one cluster node.
fn node_args(port: u16, dir: &Path, log: &Path) -> Vec<std::ffi::OsString> {
    let mut args = vec![
        os("--port"),
        os(port.to_string()),
        os("--bind"),
        os("127.0.0.1"),
        os("--cluster-enabled"),
        os("yes"),
        os("--cluster-config-file"),
    ];
    args.push(dir.join(format!("nodes-{port}.conf")).into_os_string());
    args.extend(
        [
            "--cluster-node-timeout",
            "2000",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            // Replicas sync at once, not after the default 5 s wait for more.
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
        ]
        .map(os),
    );
    args.push(dir.as_os_str().to_owned());
    args.push(os("--logfile"));
    args.push(log.as_os_str().to_owned());
    args
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    flags: Vec<String>,
    /// The primary's id, for a replica.
    primary_id: Option<String>,
    /// Served slots (importing/migrating markers left out).
    slots: Vec<RangeInclusive<u16>>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_primary(&self) -> bool {
        self.has_flag("master") && !self.has_flag("fail")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

/// The node at `port`'s `CLUSTER NODES`, parsed.
fn view(port: u16) -> Result<Vec<NodeLine>, String> {
    let text = process::text(port, &["CLUSTER", "NODES"])?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            parse_node_line(l).ok_or_else(|| format!("port {port}: bad CLUSTER NODES line {l:?}"))
        })
        .collect()
}

/// `<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let mut slots = Vec::new();
    for field in &fields[8..] {
        if field.starts_with('[') {
            continue; // [slot->-id] / [slot-<-id]: a migration in progress
        }
        let range = match field.split_once('-') {
            Some((a, b)) => a.parse().ok()?..=b.parse().ok()?,
            None => {
                let slot = field.parse().ok()?;
                slot..=slot
            }
        };
        slots.push(range);
    }
    Some(NodeLine {
        id: fields[0].to_owned(),
        flags: fields[2].split(',').map(str::to_owned).collect(),
        primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        slots,
    })
}

/// The part of `key` that is hashed: the hash tag when there is one.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum of
/// Redis Cluster's key slots.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// For each of `slots`, a key in it (`k<n>` for the first `n` that fits).
    fn keys_in_slots(slots: &[u16]) -> HashMap<u16, String> {
        let wanted: std::collections::HashSet<u16> = slots.iter().copied().collect();
        let mut keys = HashMap::new();
        for n in 0u64.. {
            if keys.len() == wanted.len() {
                break;
            }
            let key = format!("k{n}");
            let slot = RedisCluster::slot_of(&key);
            if wanted.contains(&slot) {
                keys.entry(slot).or_insert(key);
            }
        }
        keys
    }

    #[test]
    fn crc16_and_hash_tags_follow_redis() {
        // The CRC16/XMODEM check value, and slots from the cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(RedisCluster::slot_of("foo"), 12182);
        assert_eq!(
            RedisCluster::slot_of("{user1000}.following"),
            RedisCluster::slot_of("{user1000}.followers")
        );
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
    }

    #[test]
    fn cluster_starts_and_keys_land_on_the_slot_owner() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.urls().len(), 6);
        let primaries = cluster.primaries();
        let replicas = cluster.replicas();
        assert_eq!(
            (primaries.len(), replicas.len()),
            (3, 3),
            "{primaries:?} {replicas:?}"
        );
        for &p in &primaries {
            assert_eq!(cluster.replicas_of(p).len(), 1, "replicas of {p}");
        }
        let covered: usize = primaries.iter().map(|&p| cluster.slots_of(p).len()).sum();
        assert_eq!(covered, usize::from(SLOTS));

        // slot_of agrees with the server, hash tags and binary keys included.
        let seed = primaries[0];
        let mut keys: Vec<Vec<u8>> = (0..200).map(|i| format!("game:{i}").into_bytes()).collect();
        keys.extend(
            [
                "",
                "{a}b",
                "x{}y",
                "{{a}}",
                "a{b}c{d}",
                "{",
                "}{a}",
                "\u{e9}t\u{e9}",
            ]
            .map(|k| k.as_bytes().to_vec()),
        );
        keys.extend((0u8..=255).map(|b| vec![b, b'{', b.wrapping_mul(7), b'}']));
        for key in &keys {
            let args: [&[u8]; 3] = [b"CLUSTER", b"KEYSLOT", key];
            let reply = process::command(seed, &args).expect("CLUSTER KEYSLOT");
            assert_eq!(
                reply,
                Reply::Int(i64::from(RedisCluster::slot_of(key))),
                "slot of {key:?}"
            );
        }

        // A write through a cluster-aware client lands on the slot's owner.
        for i in 0..12 {
            let key = format!("score:{i}");
            let owner = cluster.primary_of_slot(RedisCluster::slot_of(&key));
            let before = cluster.commandstats(owner).get("set").copied().unwrap_or(0);
            assert_eq!(
                cluster.cluster_cli(seed, &["SET", &key, &i.to_string()]),
                "OK"
            );
            assert_eq!(
                cluster.commandstats(owner)["set"],
                before + 1,
                "SET calls on {owner}"
            );
            assert_eq!(cluster.cli(owner, &["GET", &key]), i.to_string());
            for &other in primaries.iter().filter(|&&p| p != owner) {
                let err = cluster.try_cli(other, &["GET", &key]).unwrap_err();
                assert!(
                    err.contains(&format!("MOVED {}", RedisCluster::slot_of(&key))),
                    "{err}"
                );
                assert!(err.contains(&format!("127.0.0.1:{owner}")), "{err}");
            }
        }
    }

    #[test]
    fn migrate_slot_moves_the_keys_and_they_stay_readable() {
        let cluster = RedisCluster::start();
        let slot = RedisCluster::slot_of("{game:42}");
        let from = cluster.primary_of_slot(slot);
        let to = *cluster
            .primaries()
            .iter()
            .find(|&&p| p != from)
            .expect("3 primaries");
        // 250 keys: three MIGRATE batches.
        let keys: Vec<String> = (0..250).map(|i| format!("{{game:42}}:event:{i}")).collect();
        let sets: Vec<[&str; 3]> = keys
            .iter()
            .map(|k| ["SET", k.as_str(), k.as_str()])
            .collect();
        let replies = process::pipeline(from, &sets).expect("SETs");
        assert!(
            replies.iter().all(|r| *r == Reply::Status("OK".into())),
            "{replies:?}"
        );
        let count =
            |port: u16| cluster.cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);

        cluster.migrate_slot(slot, to);

        assert_eq!(cluster.primary_of_slot(slot), to);
        assert!(cluster.slots_of(to).contains(&slot));
        assert!(!cluster.slots_of(from).contains(&slot));
        assert_eq!(count(to), "250");
        assert_eq!(count(from), "0");
        // Every node (replicas too) sends a client of that slot to `to`.
        for port in cluster.ports().into_iter().filter(|&p| p != to) {
            let err = cluster.try_cli(port, &["GET", &keys[0]]).unwrap_err();
            assert!(
                err.contains(&format!("MOVED {slot} 127.0.0.1:{to}")),
                "{port}: {err}"
            );
        }
        for key in keys.iter().step_by(25) {
            assert_eq!(cluster.cluster_cli(from, &["GET", key]), *key);
        }
        let gets: Vec<[&str; 2]> = keys.iter().map(|k| ["GET", k.as_str()]).collect();
        let values = process::pipeline(to, &gets).expect("GETs");
        for (key, value) in keys.iter().zip(values) {
            assert_eq!(value, Reply::Bulk(key.clone().into_bytes()));
        }
    }

    #[test]
    fn reshard_moves_slots_with_redis_cli() {
        let cluster = RedisCluster::start();
        let primaries = cluster.primaries();
        let (from, to) = (primaries[0], primaries[1]);
        // One key in every slot of `from`.
        let from_slots = cluster.slots_of(from);
        let by_slot = keys_in_slots(&from_slots);
        let keys: Vec<&String> = by_slot.values().collect();
        assert_eq!(keys.len(), from_slots.len());
        let sets: Vec<[&str; 3]> = keys.iter().map(|k| ["SET", k.as_str(), "v"]).collect();
        let replies = process::pipeline(from, &sets).expect("SETs");
        assert!(replies.iter().all(|r| *r == Reply::Status("OK".into())));
        let to_slots_before = cluster.slots_of(to).len();

        let moved = cluster.reshard(from, to, 10);

        assert_eq!(moved.len(), 10, "{moved:?}");
        assert_eq!(cluster.slots_of(to).len(), to_slots_before + 10);
        for &slot in &moved {
            assert_eq!(cluster.primary_of_slot(slot), to, "slot {slot}");
            let key = &by_slot[&slot];
            assert_eq!(cluster.cli(to, &["GET", key]), "v", "{key} in slot {slot}");
            assert_eq!(cluster.cluster_cli(from, &["GET", key]), "v");
        }
        let size = |port| {
            cluster
                .cli(port, &["DBSIZE"])
                .parse::<usize>()
                .expect("DBSIZE")
        };
        assert_eq!(size(from), keys.len() - 10);
        assert_eq!(size(to), 10);
    }

    #[test]
    fn kill9_a_primary_and_its_replica_takes_over() {
        let mut cluster = RedisCluster::start();
        let key = "{game:7}:state";
        let slot = RedisCluster::slot_of(key);
        let dead = cluster.primary_of_slot(slot);
        let replica = cluster.replicas_of(dead);
        assert_eq!(replica.len(), 1);
        // Acknowledged by the replica before the kill: it must survive.
        let replies = process::pipeline(dead, &[vec!["SET", key, "77"], vec!["WAIT", "1", "5000"]])
            .expect("SET + WAIT");
        assert_eq!(replies, [Reply::Status("OK".into()), Reply::Int(1)]);

        cluster.kill9(dead);
        assert!(!cluster.ports().contains(&dead));
        assert!(cluster.try_cli(dead, &["PING"]).is_err());
        let promoted = cluster.wait_for_failover(dead);

        assert_eq!(promoted, replica[0]);
        assert!(cluster.primaries().contains(&promoted));
        assert_eq!(cluster.primaries().len(), 3);
        assert_eq!(cluster.primary_of_slot(slot), promoted);
        let seed = cluster.ports()[0];
        assert_eq!(cluster.cluster_cli(seed, &["GET", key]), "77");
        assert_eq!(cluster.cluster_cli(seed, &["SET", key, "78"]), "OK");
        assert_eq!(cluster.cli(promoted, &["GET", key]), "78");
    }
}
