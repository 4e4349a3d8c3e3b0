//! `write-floor-batch`: can batched submission beat one system call per
//! delivery? (Issue 14, item 3.)
//!
//! The hub writes one small WebSocket frame to each fan's socket with one
//! non-blocking 2-slice `writev` (`src/fanout/wire.rs`). This tool measures
//! that write alone, without the hub, against the same frames handed to the
//! kernel in batches through io_uring, many sockets' sends per system call:
//!
//! - `writev`: one 2-iovec `writev` (header, payload) per socket, the hub's path;
//! - `write`: one plain `write` of the whole frame per socket;
//! - `uring-writev/K`: one `IORING_OP_WRITEV` SQE (the same 2 iovecs) per socket,
//!   `K` SQEs per `io_uring_enter` (`submit_and_wait(K)`), CQEs reaped and each
//!   checked to be the full frame;
//! - `uring-send/K`: the same with `IORING_OP_SEND` of the contiguous frame;
//! - `uring-send-fixed/K`: `uring-send` on registered files (no fd lookup);
//! - `uring-sqpoll/K`: `uring-send-fixed` with a kernel SQ polling thread
//!   (`IORING_SETUP_SQPOLL`), whose CPU is counted too.
//!
//! `K` is a batch size or `all` (every socket in one submission).
//!
//! It opens `--conns` connected loopback TCP pairs in this one process (two
//! descriptors each, so at most 9,000 under the 20,000 open-file limit): the
//! near ends are non-blocking with `TCP_NODELAY`, like the hub's; a reader
//! thread drains the far ends through an edge-triggered epoll, continuously,
//! so no send buffer fills (`--reader after` instead lets it drain only
//! between passes, so that no send wakes it: the writer's path alone). Each round writes one `--size`-byte frame to
//! every socket by each method in turn (the order rotates each round, and
//! methods are interleaved so that load from elsewhere on the machine falls
//! on all of them alike), then waits until the reader has read everything,
//! so every method starts on empty sockets.
//!
//! Measured per method, over `--rounds` rounds after `--warmup` rounds:
//!
//! - wall time of the writer's pass over all sockets (median round, ns/write);
//! - the writer thread's CPU (`getrusage(RUSAGE_THREAD)`), ns/write: on loopback
//!   it includes the receiving side's TCP input and the reader's wake-up;
//! - the CPU of the process's other threads (io_uring's io-wq workers, the
//!   SQPOLL thread), from `/proc/self/task/*/schedstat`, ns/write;
//! - the reader's CPU (its own `RUSAGE_THREAD`), ns/write.
//!
//! ```text
//! cargo build --release -p floor
//! taskset -c 0 target/release/write-floor-batch --conns 8000 --rounds 50 --size 120 --json
//! ```
//!
//! Loopback only; it stops by itself. `--check` only tests that io_uring can be
//! set up here (`IoUring::new(8)`, one NOP) and prints the kernel's answer.

use std::fmt::Write as _;
use std::io::{self, IoSlice};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use rustix::event::epoll;

/// Usage, printed for `--help` and after a bad argument.
const USAGE: &str = "\
usage: write-floor-batch [--conns N] [--rounds R] [--warmup W] [--size B]
                         [--batches 64,256,1024,all] [--methods LIST] [--reader live|after]
                         [--json] [--check]

  --conns N      connected loopback TCP pairs (1..=9000, default 8000)
  --rounds R     measured rounds (default 50); each writes once to every socket by each method
  --warmup W     rounds run first and not counted (default 2)
  --size B       frame bytes, WebSocket header included (8..=65000, default 120)
  --batches L    io_uring batch sizes, comma-separated; `all` = every socket (default 64,256,1024,all)
  --methods L    comma-separated among writev, write, uring-writev, uring-send,
                 uring-send-fixed, uring-sqpoll (default: all of them)
  --reader M     live: the reader drains while the writer writes, woken by each frame
                 (default); after: it drains only between passes, so no send wakes it
  --json         print the results as one JSON object instead of a table
  --check        only check that io_uring works here, then exit";

/// Every method, in the default order.
const ALL_METHODS: [&str; 6] = [
    "writev",
    "write",
    "uring-writev",
    "uring-send",
    "uring-send-fixed",
    "uring-sqpoll",
];

/// How long a SQPOLL thread spins for work before it sleeps, in ms.
const SQPOLL_IDLE_MS: u32 = 1;

/// The longest wait for the reader to catch up after one pass.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    conns: usize,
    rounds: usize,
    warmup: usize,
    size: usize,
    batches: Vec<Option<usize>>,
    methods: Vec<String>,
    live: bool,
    json: bool,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        conns: 8_000,
        rounds: 50,
        warmup: 2,
        size: 120,
        batches: vec![Some(64), Some(256), Some(1024), None],
        methods: ALL_METHODS.iter().map(|m| (*m).to_owned()).collect(),
        live: true,
        json: false,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.replace(['_', ','], "")
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--conns" => args.conns = number(value()?)?,
            "--rounds" => args.rounds = number(value()?)?,
            "--warmup" => args.warmup = number(value()?)?,
            "--size" => args.size = number(value()?)?,
            "--batches" => {
                args.batches = value()?
                    .split(',')
                    .map(|b| match b.trim() {
                        "all" => Ok(None),
                        n => n
                            .parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .map(Some)
                            .ok_or_else(|| format!("--batches: bad batch size {n:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--methods" => {
                args.methods = value()?.split(',').map(|m| m.trim().to_owned()).collect();
                if let Some(bad) = args
                    .methods
                    .iter()
                    .find(|m| !ALL_METHODS.contains(&m.as_str()))
                {
                    return Err(format!("--methods: unknown method {bad:?}"));
                }
            }
            "--reader" => {
                args.live = match value()?.as_str() {
                    "live" => true,
                    "after" => false,
                    other => return Err(format!("--reader: live or after, not {other:?}")),
                }
            }
            "--json" => args.json = true,
            "--check" => args.check = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.conns == 0 || args.conns > 9_000 {
        return Err("--conns must be 1..=9000 (two descriptors each, 20,000 allowed)".into());
    }
    if args.rounds == 0 || args.rounds > 10_000 {
        return Err("--rounds must be 1..=10000".into());
    }
    if !(8..=65_000).contains(&args.size) {
        return Err("--size must be 8..=65000".into());
    }
    if args.batches.is_empty() || args.methods.is_empty() {
        return Err("--batches and --methods must not be empty".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("write-floor-batch: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if args.check {
        match check_uring() {
            Ok(msg) => println!("{msg}"),
            Err(e) => {
                println!("io_uring unavailable: {e} (errno {:?})", e.raw_os_error());
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("write-floor-batch: {e}");
        std::process::exit(1);
    }
}

/// `IoUring::new(8)` and one NOP through it.
fn check_uring() -> io::Result<String> {
    let mut ring = IoUring::new(8)?;
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory; the entry is copied into the ring.
    #[allow(unsafe_code)]
    let pushed = unsafe { ring.submission().push(&nop) };
    pushed.map_err(|_| io::Error::other("SQ full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no CQE"))?;
    let sqpoll = match IoUring::<squeue::Entry>::builder()
        .setup_sqpoll(SQPOLL_IDLE_MS)
        .build(8)
    {
        Ok(_) => "SQPOLL: permitted".to_owned(),
        Err(e) => format!("SQPOLL: refused: {e}"),
    };
    Ok(format!(
        "io_uring works: IoUring::new(8) ok, NOP completed (user_data {}, result {}); {sqpoll}; kernel {}",
        cqe.user_data(),
        cqe.result(),
        kernel()
    ))
}

/// One way of writing a frame to every socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Writev,
    Write,
    UringWritev,
    UringSend,
    UringSendFixed,
    UringSqpoll,
}

impl Kind {
    fn of(name: &str) -> Kind {
        match name {
            "writev" => Kind::Writev,
            "write" => Kind::Write,
            "uring-writev" => Kind::UringWritev,
            "uring-send" => Kind::UringSend,
            "uring-send-fixed" => Kind::UringSendFixed,
            _ => Kind::UringSqpoll,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Writev => "writev",
            Kind::Write => "write",
            Kind::UringWritev => "uring-writev",
            Kind::UringSend => "uring-send",
            Kind::UringSendFixed => "uring-send-fixed",
            Kind::UringSqpoll => "uring-sqpoll",
        }
    }

    fn is_uring(self) -> bool {
        !matches!(self, Kind::Writev | Kind::Write)
    }
}

/// A method under test, with its ring and what it measured.
struct Method {
    kind: Kind,
    /// SQEs per submission (io_uring only).
    batch: usize,
    label: String,
    ring: Option<IoUring>,
    /// Wall time of each measured pass, in ns.
    passes: Vec<u64>,
    writer_cpu: Duration,
    other_cpu: Duration,
    reader_cpu: Duration,
    syscalls: u64,
    writes: u64,
    /// The writer's voluntary and involuntary context switches in passes.
    voluntary: u64,
    involuntary: u64,
}

impl Method {
    fn new(kind: Kind, batch: usize, label: String, near: &[TcpStream]) -> io::Result<Method> {
        let ring = if kind.is_uring() {
            let entries = u32::try_from(batch.next_power_of_two())
                .map_err(|_| io::Error::other("batch too large"))?;
            let mut builder = IoUring::<squeue::Entry>::builder();
            builder.setup_cqsize(entries * 2);
            if kind == Kind::UringSqpoll {
                builder.setup_sqpoll(SQPOLL_IDLE_MS);
            }
            let ring = builder.build(entries)?;
            if matches!(kind, Kind::UringSendFixed | Kind::UringSqpoll) {
                let fds: Vec<RawFd> = near.iter().map(AsRawFd::as_raw_fd).collect();
                ring.submitter().register_files(&fds)?;
            }
            Some(ring)
        } else {
            None
        };
        Ok(Method {
            kind,
            batch,
            label,
            ring,
            passes: Vec::new(),
            writer_cpu: Duration::ZERO,
            other_cpu: Duration::ZERO,
            reader_cpu: Duration::ZERO,
            syscalls: 0,
            writes: 0,
            voluntary: 0,
            involuntary: 0,
        })
    }
}

/// The frame every socket gets: a WebSocket binary frame's header and its
/// payload, and the same bytes contiguous.
struct Frame {
    header: Vec<u8>,
    payload: Vec<u8>,
    whole: Vec<u8>,
    /// The two slices for `IORING_OP_WRITEV`, shared by every SQE (the kernel
    /// only reads them).
    iov: [libc::iovec; 2],
}

impl Frame {
    fn new(size: usize) -> Frame {
        // Unmasked server frame: FIN + binary, then a 7-bit or 16-bit length.
        let (header, payload_len) = if size - 2 <= 125 {
            (vec![0x82, (size - 2) as u8], size - 2)
        } else {
            let len = size - 4;
            (vec![0x82, 126, (len >> 8) as u8, len as u8], len)
        };
        let payload = vec![0x5a; payload_len];
        let mut whole = header.clone();
        whole.extend_from_slice(&payload);
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            },
        ];
        Frame {
            header,
            payload,
            whole,
            iov,
        }
    }

    fn len(&self) -> usize {
        self.whole.len()
    }
}

/// CPU time (user + system) of this thread (`RUSAGE_THREAD`) or this
/// process (`RUSAGE_SELF`).
fn cpu(who: libc::c_int) -> Duration {
    usage(who).0
}

/// CPU time, and voluntary and involuntary context switches, of `who`.
fn usage(who: libc::c_int) -> (Duration, u64, u64) {
    // SAFETY: `rusage` is plain old data, valid when zeroed.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the call's duration.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrusage(who, &mut usage) };
    if rc != 0 {
        return (Duration::ZERO, 0, 0);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_nvcsw as u64,
        usage.ru_nivcsw as u64,
    )
}

/// Whether every thread of this process but `skip` is asleep (so that its
/// on-CPU time so far is in its `schedstat`).
fn others_asleep(skip: &[i32]) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return true;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .is_some_and(|tid| !skip.contains(&tid))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .all(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_none_or(|state| state != 'R')
        })
}

/// On-CPU time in ns of every thread of this process but `skip`, from
/// `/proc/self/task/*/schedstat` (io_uring's SQPOLL and io-wq threads are
/// threads of the process).
fn other_threads_ns(skip: &[i32]) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .is_some_and(|tid| !skip.contains(&tid))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What the reader thread shares with the writer.
struct ReaderState {
    bytes: AtomicU64,
    /// The reader's own CPU time, in ns, updated after every batch of events.
    cpu_ns: AtomicU64,
    /// Drain as data comes (`--reader live`), or only up to `released`.
    live: bool,
    /// Bytes the reader may drain up to, in `--reader after` mode.
    released: AtomicU64,
    /// The reader's thread id, once it runs.
    tid: AtomicI32,
    stop: AtomicBool,
}

/// Drains the far ends until told to stop.
fn drain(far: Vec<TcpStream>, state: Arc<ReaderState>) -> io::Result<()> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, s) in far.iter().enumerate() {
        epoll::add(
            &ep,
            s.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
    }
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    while !state.stop.load(Ordering::Relaxed) {
        let wait = if state.live {
            &timeout
        } else if state.bytes.load(Ordering::Relaxed) < state.released.load(Ordering::Acquire) {
            &zero
        } else {
            // Not in epoll_wait, so the writer's sends wake nobody.
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(wait)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut got = 0u64;
        for ev in &events {
            let s = &far[ev.data.u64() as usize];
            loop {
                match rustix::io::read(s, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        state.cpu_ns.store(
            cpu(libc::RUSAGE_THREAD).as_nanos() as u64,
            Ordering::Relaxed,
        );
        state.bytes.fetch_add(got, Ordering::Release);
    }
    Ok(())
}

/// Opens `n` connected loopback pairs: (near ends, far ends).
fn open_pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut near = Vec::with_capacity(n);
    let mut far = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        near.push(server);
        far.push(client);
    }
    Ok((near, far))
}

/// One pass: the frame to every socket by `m`. Returns the system calls made.
fn pass(m: &mut Method, near: &[TcpStream], frame: &Frame) -> io::Result<u64> {
    let want = frame.len();
    match m.kind {
        Kind::Writev => {
            let slices = [IoSlice::new(&frame.header), IoSlice::new(&frame.payload)];
            for s in near {
                full(
                    rustix::io::writev(s, &slices).map_err(io::Error::from)?,
                    want,
                )?;
            }
            Ok(near.len() as u64)
        }
        Kind::Write => {
            for s in near {
                full(
                    rustix::io::write(s, &frame.whole).map_err(io::Error::from)?,
                    want,
                )?;
            }
            Ok(near.len() as u64)
        }
        kind => {
            let ring = m.ring.as_mut().ok_or_else(|| io::Error::other("no ring"))?;
            let len = u32::try_from(want).map_err(io::Error::other)?;
            let mut syscalls = 0;
            let mut start = 0;
            while start < near.len() {
                let end = (start + m.batch).min(near.len());
                let mut i = start;
                while i < end {
                    let mut sq = ring.submission();
                    while i < end {
                        let fd = near[i].as_raw_fd();
                        let sqe = match kind {
                            Kind::UringWritev => {
                                opcode::Writev::new(types::Fd(fd), frame.iov.as_ptr(), 2).build()
                            }
                            Kind::UringSend => {
                                opcode::Send::new(types::Fd(fd), frame.whole.as_ptr(), len).build()
                            }
                            _ => {
                                opcode::Send::new(types::Fixed(i as u32), frame.whole.as_ptr(), len)
                                    .build()
                            }
                        };
                        let sqe: squeue::Entry = sqe.user_data(i as u64);
                        // SAFETY: the SQE points at `frame`'s buffers (and its
                        // iovec array), which outlive the ring's use of them:
                        // every CQE of this batch is reaped below before
                        // `pass` returns, and `frame` lives for the whole run.
                        // The file is open (or registered) until then too.
                        #[allow(unsafe_code)]
                        let pushed = unsafe { sq.push(&sqe) };
                        if pushed.is_err() {
                            break;
                        }
                        i += 1;
                    }
                    drop(sq);
                    if i < end {
                        // Only a SQPOLL ring can look full here: its kernel
                        // thread may post the last batch's CQEs before it
                        // moves the SQ head past their SQEs.
                        if kind != Kind::UringSqpoll {
                            return Err(io::Error::other("SQ full"));
                        }
                        ring.submitter().squeue_wait()?;
                        syscalls += 1;
                    }
                }
                let count = end - start;
                ring.submit_and_wait(count)?;
                syscalls += 1;
                let mut reaped = 0;
                while reaped < count {
                    for cqe in ring.completion() {
                        let res = cqe.result();
                        if res < 0 {
                            return Err(io::Error::from_raw_os_error(-res));
                        }
                        full(res as usize, want)?;
                        reaped += 1;
                    }
                    if reaped < count {
                        ring.submit_and_wait(count - reaped)?;
                        syscalls += 1;
                    }
                }
                start = end;
            }
            Ok(syscalls)
        }
    }
}

fn full(written: usize, want: usize) -> io::Result<()> {
    if written == want {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "short write: {written} of {want} bytes"
        )))
    }
}

fn run(args: &Args) -> io::Result<()> {
    let (near, far) = open_pairs(args.conns)?;
    let frame = Frame::new(args.size);
    let state = Arc::new(ReaderState {
        bytes: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        live: args.live,
        released: AtomicU64::new(0),
        tid: AtomicI32::new(0),
        stop: AtomicBool::new(false),
    });
    let reader = {
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            state.tid.store(
                rustix::thread::gettid().as_raw_nonzero().get(),
                Ordering::Relaxed,
            );
            drain(far, state)
        })
    };
    let writer_tid = rustix::thread::gettid().as_raw_nonzero().get();
    while state.tid.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let skip = [writer_tid, state.tid.load(Ordering::Relaxed)];

    let mut methods = Vec::new();
    let mut unavailable = Vec::new();
    for name in &args.methods {
        let kind = Kind::of(name);
        let batches: Vec<Option<usize>> = if kind.is_uring() {
            args.batches.clone()
        } else {
            vec![Some(1)]
        };
        for b in batches {
            let batch = b.unwrap_or(args.conns).min(args.conns);
            let label = match (kind.is_uring(), b) {
                (false, _) => kind.name().to_owned(),
                (true, None) => format!("{}/all", kind.name()),
                (true, Some(k)) => format!("{}/{k}", kind.name()),
            };
            match Method::new(kind, batch, label.clone(), &near) {
                Ok(m) => methods.push(m),
                Err(e) => unavailable.push((label, e.to_string())),
            }
        }
    }

    let mut written = 0u64;
    let total = args.warmup + args.rounds;
    for round in 0..total {
        let measured = round >= args.warmup;
        let n = methods.len();
        for j in 0..n {
            let m = &mut methods[(round + j) % n];
            let (o0, r0) = (
                other_threads_ns(&skip),
                state.cpu_ns.load(Ordering::Relaxed),
            );
            let (w0, v0, i0) = usage(libc::RUSAGE_THREAD);
            let t0 = Instant::now();
            let syscalls = pass(m, &near, &frame)?;
            let wall = t0.elapsed();
            let (w1, v1, i1) = usage(libc::RUSAGE_THREAD);
            written += (near.len() * frame.len()) as u64;
            state.released.store(written, Ordering::Release);
            let waited = Instant::now();
            while state.bytes.load(Ordering::Acquire) < written {
                if waited.elapsed() > DRAIN_TIMEOUT {
                    return Err(io::Error::other("the reader fell behind (drain timeout)"));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            // Let the reader finish its bookkeeping and go back to sleep, and
            // a SQPOLL thread spin out its idle time and sleep (its spinning
            // is charged to its method), before the next method starts.
            std::thread::sleep(Duration::from_millis(2 + u64::from(SQPOLL_IDLE_MS)));
            let settling = Instant::now();
            while !others_asleep(&skip) && settling.elapsed() < Duration::from_millis(200) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (o2, r2) = (
                other_threads_ns(&skip),
                state.cpu_ns.load(Ordering::Relaxed),
            );
            if measured {
                m.passes.push(wall.as_nanos() as u64);
                m.writer_cpu += w1 - w0;
                m.reader_cpu += Duration::from_nanos(r2.saturating_sub(r0));
                m.other_cpu += Duration::from_nanos(o2.saturating_sub(o0));
                m.voluntary += v1 - v0;
                m.involuntary += i1 - i0;
                m.syscalls += syscalls;
                m.writes += near.len() as u64;
            }
        }
    }
    state.stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| io::Error::other("reader panicked"))??;

    let report = Report::new(args, &frame, &mut methods, unavailable);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// One method's figures.
struct Row {
    label: String,
    kind: &'static str,
    batch: usize,
    writes: u64,
    syscalls: u64,
    wall_median: f64,
    wall_min: f64,
    wall_max: f64,
    writer_cpu: f64,
    other_cpu: f64,
    reader_cpu: f64,
    voluntary: u64,
    involuntary: u64,
}

/// Everything printed.
struct Report {
    kernel: String,
    cpus: String,
    conns: usize,
    rounds: usize,
    size: usize,
    reader: &'static str,
    rows: Vec<Row>,
    unavailable: Vec<(String, String)>,
}

impl Report {
    fn new(
        args: &Args,
        frame: &Frame,
        methods: &mut [Method],
        unavailable: Vec<(String, String)>,
    ) -> Report {
        let conns = args.conns as f64;
        let rows = methods
            .iter_mut()
            .map(|m| {
                m.passes.sort_unstable();
                let per = |ns: u64| ns as f64 / conns;
                let writes = m.writes.max(1) as f64;
                Row {
                    label: m.label.clone(),
                    kind: m.kind.name(),
                    batch: m.batch,
                    writes: m.writes,
                    syscalls: m.syscalls,
                    wall_median: per(m.passes[m.passes.len() / 2]),
                    wall_min: per(m.passes[0]),
                    wall_max: per(m.passes[m.passes.len() - 1]),
                    writer_cpu: m.writer_cpu.as_nanos() as f64 / writes,
                    other_cpu: m.other_cpu.as_nanos() as f64 / writes,
                    reader_cpu: m.reader_cpu.as_nanos() as f64 / writes,
                    voluntary: m.voluntary,
                    involuntary: m.involuntary,
                }
            })
            .collect();
        Report {
            kernel: kernel(),
            cpus: allowed_cpus(),
            conns: args.conns,
            rounds: args.rounds,
            size: frame.len(),
            reader: if args.live { "live" } else { "after" },
            rows,
            unavailable,
        }
    }

    /// writer + other CPU of the `writev` row, the baseline.
    fn baseline(&self) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.kind == "writev")
            .map(|r| r.writer_cpu + r.other_cpu)
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kernel {}, cpus {}, {} sockets, {} rounds, {}-byte frames, reader {}; ns per write\n\
             (writer: writer thread's CPU; other: SQPOLL/io-wq threads; all thr.: writer + other + reader)",
            self.kernel, self.cpus, self.conns, self.rounds, self.size, self.reader
        );
        let _ = writeln!(
            out,
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>10} {:>7}",
            "method",
            "wall p50",
            "wall min",
            "wall max",
            "writer",
            "other",
            "wr+other",
            "reader",
            "vs writev",
            "all thr.",
            "vs writev",
            "csw v/i"
        );
        let base = self.baseline();
        let base_total = self
            .rows
            .iter()
            .find(|r| r.kind == "writev")
            .map(|r| r.writer_cpu + r.other_cpu + r.reader_cpu);
        for r in &self.rows {
            let cost = r.writer_cpu + r.other_cpu;
            let vs = base.map_or_else(String::new, |b| {
                format!("{:+.1} %", (cost / b - 1.0) * 100.0)
            });
            let total = cost + r.reader_cpu;
            let vs_total = base_total.map_or_else(String::new, |b| {
                format!("{:+.1} %", (total / b - 1.0) * 100.0)
            });
            let _ = writeln!(
                out,
                "{:<22} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10} {:>9.0} {:>10} {:>7}",
                r.label,
                r.wall_median,
                r.wall_min,
                r.wall_max,
                r.writer_cpu,
                r.other_cpu,
                cost,
                r.reader_cpu,
                vs,
                total,
                vs_total,
                format!("{}/{}", r.voluntary, r.involuntary)
            );
        }
        for (label, e) in &self.unavailable {
            let _ = writeln!(out, "{label:<22} unavailable: {e}");
        }
        out
    }

    fn json(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"kernel\":{},\"cpus\":{},\"conns\":{},\"rounds\":{},\"frame_bytes\":{},\"reader\":{},\"results\":[",
            quote(&self.kernel),
            quote(&self.cpus),
            self.conns,
            self.rounds,
            self.size,
            quote(self.reader)
        );
        for (i, r) in self.rows.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"method\":{},\"kind\":{},\"batch\":{},\"writes\":{},\"syscalls\":{},\
                 \"wall_ns_p50\":{:.1},\"wall_ns_min\":{:.1},\"wall_ns_max\":{:.1},\
                 \"writer_cpu_ns\":{:.1},\"other_cpu_ns\":{:.1},\"reader_cpu_ns\":{:.1},\
                 \"writer_csw_voluntary\":{},\"writer_csw_involuntary\":{}}}",
                if i == 0 { "" } else { "," },
                quote(&r.label),
                quote(r.kind),
                r.batch,
                r.writes,
                r.syscalls,
                r.wall_median,
                r.wall_min,
                r.wall_max,
                r.writer_cpu,
                r.other_cpu,
                r.reader_cpu,
                r.voluntary,
                r.involuntary
            );
        }
        out.push_str("],\"unavailable\":[");
        for (i, (label, e)) in self.unavailable.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"method\":{},\"error\":{}}}",
                if i == 0 { "" } else { "," },
                quote(label),
                quote(e)
            );
        }
        out.push_str("]}");
        out
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn allowed_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
