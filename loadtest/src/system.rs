//! What the load test asks of Linux about processes: the open-file limit
//! (raised to the hard limit at start, since every fan is one open socket),
//! and a process's CPU time and resident memory, read from `/proc`.
//!
//! The hub's CPU-seconds and RSS are read from outside the hub, the way an
//! operator would read them, so the figures do not depend on the hub reporting
//! itself honestly. A [`Meter`] takes the samples at the run's phases and turns
//! them into [`ProcessReport`]s; an [`RssSampler`] follows the hub's memory
//! through the measured window.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle, time::MissedTickBehavior};

/// The open-file limit before and after [`raise_fd_limit`].
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct FdLimit {
    /// The soft limit the process started with (`None` = unlimited).
    pub(crate) before: Option<u64>,
    /// The soft limit now.
    pub(crate) soft: Option<u64>,
    /// The hard limit (the soft limit can go no higher).
    pub(crate) hard: Option<u64>,
    /// Why raising failed, if it did.
    pub(crate) error: Option<String>,
}

/// Raises this process's soft open-file limit to its hard limit. Child
/// processes (a hub started with `--hub-bin`) inherit the raised limit.
pub(crate) fn raise_fd_limit() -> FdLimit {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let mut limit = FdLimit {
        before: now.current,
        soft: now.current,
        hard: now.maximum,
        error: None,
    };
    if now.current != now.maximum {
        let raised = rustix::process::Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.soft = getrlimit(Resource::Nofile).current,
            Err(e) => limit.error = Some(format!("setrlimit(RLIMIT_NOFILE): {e}")),
        }
    }
    limit
}

/// Clock ticks per second, the unit of CPU time in `/proc/<pid>/stat`
/// (`sysconf(_SC_CLK_TCK)`, read from the kernel's auxiliary vector).
pub(crate) fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// User plus system CPU time of process `pid` so far, in clock ticks
/// (fields 14 and 15 of `/proc/<pid>/stat`).
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&text).with_context(|| format!("{path} has no utime/stime fields: {text}"))
}

/// `utime + stime` from the text of a `/proc/<pid>/stat` file.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let [utime, stime, _, _] = parse_times(stat)?;
    Some(utime + stime)
}

/// `utime, stime, cutime, cstime` (fields 14 to 17) from the text of a
/// `/proc/<pid>/stat` file. The command name (field 2) is in parentheses and
/// may hold spaces, so fields are counted from the last `)`.
fn parse_times(stat: &str) -> Option<[u64; 4]> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards.
    let mut fields = after_name.split_whitespace().skip(11);
    let mut times = [0u64; 4];
    for time in &mut times {
        *time = fields.next()?.parse().ok()?;
    }
    Some(times)
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_rss(&text).with_context(|| format!("{path} has no VmRSS line"))
}

/// `VmRSS` (in kB in the file) as bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time of the whole machine so far, in clock ticks, from the first line
/// of `/proc/stat`: `(busy, total)` where idle and iowait are the difference.
pub(crate) fn machine_ticks() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_ticks(&text).context("/proc/stat has no `cpu` line")
}

/// `(busy, total)` ticks from the text of `/proc/stat`.
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already
    // counted in user).
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let total: u64 = (0..8).map(get).sum();
    Some((total - idle, total))
}

/// Cores of the machine (`cpuN` lines of `/proc/stat`), at least 1.
pub(crate) fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|text| {
            text.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// CPU ticks so far of every process on the machine, its own and its
/// waited-for children's (a build tool's compilers are gone by the time the
/// window ends, but their time is in their parent's), with its name
/// (`/proc/<pid>/comm`), to find who else ran during the window.
fn all_processes() -> HashMap<u32, (String, u64)> {
    let mut all = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go; one that is gone is simply not counted.
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read_to_string(format!("/proc/{pid}/comm")),
        ) else {
            continue;
        };
        if let Some(times) = parse_times(&stat) {
            all.insert(pid, (comm.trim().to_string(), times.iter().sum()));
        }
    }
    all
}

/// A process the run does not watch, and its CPU during the window.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct OtherProcess {
    /// Its name (`comm`).
    pub(crate) name: String,
    /// Its process id.
    pub(crate) pid: u32,
    /// Cores it kept busy on average during the window.
    pub(crate) cores: f64,
}

/// What the whole machine did during the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct MachineReport {
    /// Cores of the machine.
    pub(crate) cores: usize,
    /// Cores kept busy on average during the window, by anything.
    pub(crate) busy_cores: Option<f64>,
    /// Of those, cores used by processes the run does not watch (other
    /// programs, and kernel work not charged to a watched process): when this
    /// is large, the figures were disturbed.
    pub(crate) other_cores: Option<f64>,
    /// The unwatched processes that used the most CPU (at most 3, each above
    /// 0.02 cores), kernel threads such as `ksoftirqd` included.
    pub(crate) top_others: Vec<OtherProcess>,
}

/// What a watched process is, for sums in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ProcessKind {
    /// A scorehub node.
    Hub,
    /// The redis-server a cluster shares.
    Redis,
    /// This load generator.
    Loadtest,
}

/// The phases at which resident memory is sampled.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    /// Games created, no fan connected yet.
    Before,
    /// Every fan connected, subscribed and idle (no event posted yet).
    Idle,
    /// After the measured window, fans still connected.
    End,
}

/// One watched process and its samples.
#[derive(Debug)]
struct Watched {
    /// Name in the report, e.g. `hub 1 (scorekeeper)`.
    role: String,
    /// What it is.
    kind: ProcessKind,
    /// Its process id.
    pid: u32,
    /// RSS per [`Phase`], in bytes.
    rss: [Option<u64>; 3],
    /// CPU ticks at the start and the end of the measured window.
    cpu: [Option<u64>; 2],
    /// The first sample that could not be read.
    problem: Option<String>,
}

/// Samples CPU time and RSS of a few processes at the run's phases, and the
/// machine's CPU time at the window's edges.
#[derive(Debug)]
pub(crate) struct Meter {
    /// The processes, in report order.
    watched: Vec<Watched>,
    /// Machine `(busy, total)` ticks at the start and end of the window.
    machine: [Option<(u64, u64)>; 2],
    /// Every process's CPU ticks at the start and end of the window.
    everyone: [HashMap<u32, (String, u64)>; 2],
}

/// What was measured of one process.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProcessReport {
    /// Its name in the report.
    pub(crate) role: String,
    /// What it is.
    pub(crate) kind: ProcessKind,
    /// Its process id.
    pub(crate) pid: u32,
    /// CPU-seconds (user + system) used during the measured window.
    pub(crate) cpu_s: Option<f64>,
    /// `cpu_s` per second of the window: 1.0 is one core kept busy.
    pub(crate) cores: Option<f64>,
    /// RSS before any fan connected, bytes.
    pub(crate) rss_before_bytes: Option<u64>,
    /// RSS with every fan connected and idle, bytes.
    pub(crate) rss_idle_bytes: Option<u64>,
    /// RSS after the measured window, bytes.
    pub(crate) rss_end_bytes: Option<u64>,
    /// The first sample that could not be read (the process may have died).
    pub(crate) problem: Option<String>,
}

impl Meter {
    /// A meter for these processes: `(role, kind, pid)`.
    pub(crate) fn new(processes: impl IntoIterator<Item = (String, ProcessKind, u32)>) -> Self {
        Self {
            watched: processes
                .into_iter()
                .map(|(role, kind, pid)| Watched {
                    role,
                    kind,
                    pid,
                    rss: [None; 3],
                    cpu: [None; 2],
                    problem: None,
                })
                .collect(),
            machine: [None; 2],
            everyone: [HashMap::new(), HashMap::new()],
        }
    }

    /// Samples every process's RSS for `phase`.
    pub(crate) fn sample_rss(&mut self, phase: Phase) {
        for w in &mut self.watched {
            match rss_bytes(w.pid) {
                Ok(bytes) => w.rss[phase as usize] = Some(bytes),
                Err(e) => {
                    w.problem.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }

    /// Samples every process's CPU time at the start (`end == false`) or the
    /// end of the measured window.
    pub(crate) fn sample_cpu(&mut self, end: bool) {
        self.machine[usize::from(end)] = machine_ticks().ok();
        self.everyone[usize::from(end)] = all_processes();
        for w in &mut self.watched {
            match cpu_ticks(w.pid) {
                Ok(ticks) => w.cpu[usize::from(end)] = Some(ticks),
                Err(e) => {
                    w.problem.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }

    /// What the whole machine did in a window of `window_s` seconds, given
    /// what the watched processes did (`processes`, from [`Self::reports`]).
    pub(crate) fn machine(&self, window_s: f64, processes: &[ProcessReport]) -> MachineReport {
        let ticks = ticks_per_second() as f64;
        let window_s = window_s.max(f64::EPSILON);
        let busy_cores = match self.machine {
            [Some((busy0, _)), Some((busy1, _))] => {
                Some(busy1.saturating_sub(busy0) as f64 / ticks / window_s)
            }
            _ => None,
        };
        let watched: f64 = processes.iter().filter_map(|p| p.cores).sum();
        let [start, end] = &self.everyone;
        let mut top_others: Vec<OtherProcess> = end
            .iter()
            .filter(|(pid, _)| !self.watched.iter().any(|w| w.pid == **pid))
            .filter_map(|(&pid, (name, ticks_end))| {
                let ticks_start = start.get(&pid).map_or(0, |(_, t)| *t);
                let cores = ticks_end.saturating_sub(ticks_start) as f64 / ticks / window_s;
                (cores > 0.02).then(|| OtherProcess {
                    name: name.clone(),
                    pid,
                    cores,
                })
            })
            .collect();
        top_others.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        top_others.truncate(3);
        MachineReport {
            cores: machine_cores(),
            busy_cores,
            other_cores: busy_cores.map(|b| (b - watched).max(0.0)),
            top_others,
        }
    }

    /// The measurements, with CPU ticks turned into seconds over a window of
    /// `window_s` seconds.
    pub(crate) fn reports(&self, window_s: f64) -> Vec<ProcessReport> {
        let ticks = ticks_per_second() as f64;
        self.watched
            .iter()
            .map(|w| {
                let cpu_s = match w.cpu {
                    [Some(start), Some(end)] => Some(end.saturating_sub(start) as f64 / ticks),
                    _ => None,
                };
                ProcessReport {
                    role: w.role.clone(),
                    kind: w.kind,
                    pid: w.pid,
                    cpu_s,
                    cores: cpu_s.map(|s| s / window_s.max(f64::EPSILON)),
                    rss_before_bytes: w.rss[Phase::Before as usize],
                    rss_idle_bytes: w.rss[Phase::Idle as usize],
                    rss_end_bytes: w.rss[Phase::End as usize],
                    problem: w.problem.clone(),
                }
            })
            .collect()
    }
}

/// How often [`RssSampler`] samples during the measured window.
pub(crate) const RSS_EVERY: Duration = Duration::from_secs(1);

/// The summed RSS of a few processes, sampled at a steady interval.
#[derive(Clone, Debug, Default)]
pub(crate) struct RssSeries {
    /// The interval.
    pub(crate) every: Duration,
    /// One sum per sample, bytes, oldest first. A sample for which some
    /// process could not be read is left out.
    pub(crate) samples: Vec<u64>,
    /// The first sample that could not be read.
    pub(crate) problem: Option<String>,
}

impl RssSeries {
    /// Adds the sum of the RSS of `pids`, unless one cannot be read.
    fn sample(&mut self, pids: &[u32]) {
        let sum: Result<u64> = pids.iter().map(|&pid| rss_bytes(pid)).sum();
        match sum {
            Ok(bytes) => self.samples.push(bytes),
            Err(e) => {
                self.problem.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

/// Samples the summed RSS of some processes (the hubs) in a task of its own:
/// at once, every `every`, and once more when stopped, so that the samples
/// span the window from edge to edge. The task ends with [`RssSampler::stop`].
#[derive(Debug)]
pub(crate) struct RssSampler {
    /// Tells the task to take its last sample and end.
    stop: oneshot::Sender<()>,
    /// The task, returning its samples.
    task: JoinHandle<RssSeries>,
}

impl RssSampler {
    /// Starts sampling `pids` (nothing is sampled when there are none).
    pub(crate) fn start(pids: Vec<u32>, every: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut series = RssSeries {
                every,
                ..RssSeries::default()
            };
            if pids.is_empty() {
                // Either a stop or a dropped sampler ends the wait.
                let _ = stopped.await;
                return series;
            }
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = ticks.tick() => series.sample(&pids),
                }
            }
            series.sample(&pids);
            series
        });
        Self { stop, task }
    }

    /// Takes the last sample and returns them all.
    pub(crate) async fn stop(self) -> RssSeries {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(series) => series,
            Err(e) => RssSeries {
                problem: Some(format!("the sampling task failed: {e}")),
                ..RssSeries::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Meter, Phase, ProcessKind, RssSampler, parse_cpu_ticks, parse_machine_ticks, parse_rss,
    };
    use std::time::Duration;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A command name with spaces and parentheses must not shift the fields.
        let stat = "4242 (score hub) (x)) S 1 4242 4242 0 -1 4194560 1069 0 0 0 \
                    1234 567 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tscorehub\nVmPeak:\t  900 kB\nVmRSS:\t   32576 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(32_576 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn machine_ticks_split_busy_from_idle() {
        let stat = "cpu  100 2 30 400 5 0 7 1 9 0\ncpu0 50 1 15 200 2 0 3 0 0 0\n";
        // busy: user nice system irq softirq steal; idle: idle iowait.
        assert_eq!(parse_machine_ticks(stat), Some((140, 545)));
    }

    #[test]
    fn this_process_can_be_measured() {
        let mut meter = Meter::new([(
            "loadtest".to_string(),
            ProcessKind::Loadtest,
            std::process::id(),
        )]);
        meter.sample_rss(Phase::Before);
        meter.sample_cpu(false);
        meter.sample_cpu(true);
        let reports = meter.reports(1.0);
        let report = &reports[0];
        let machine = meter.machine(1.0, &reports);
        assert!(
            machine.cores >= 1 && machine.busy_cores.is_some(),
            "{machine:?}"
        );
        assert!(report.rss_before_bytes.is_some_and(|b| b > 0), "{report:?}");
        assert!(report.cpu_s.is_some(), "{report:?}");
        assert!(report.problem.is_none(), "{report:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn rss_is_sampled_from_edge_to_edge_of_the_window() {
        let sampler = RssSampler::start(vec![std::process::id()], Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let series = sampler.stop().await;
        // At 0, 1, 2 and 3 s, and at the stop.
        assert_eq!(series.samples.len(), 5, "{series:?}");
        assert!(series.samples.iter().all(|&b| b > 0), "{series:?}");
        assert_eq!(series.every, Duration::from_secs(1));
        assert!(series.problem.is_none(), "{series:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_cannot_be_read_gives_no_samples_and_says_why() {
        // Above the kernel's pid limit (4194304), so never a process.
        let sampler =
            RssSampler::start(vec![std::process::id(), 4_194_305], Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let series = sampler.stop().await;
        assert!(series.samples.is_empty(), "{series:?}");
        assert!(
            series
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("/proc/4194305/status")),
            "{series:?}"
        );
        let none = RssSampler::start(Vec::new(), Duration::from_secs(1))
            .stop()
            .await;
        assert!(
            none.samples.is_empty() && none.problem.is_none(),
            "{none:?}"
        );
    }
}
