//! The floor under a hub's fan-out: what one small loopback `writev` costs
//! the writing thread on this machine, with nothing else around it.
//!
//! It opens `--conns` loopback TCP connection pairs in one process. A reader
//! thread drains the far ends (like the load test's fans); the writer thread
//! sends, `--rate` times a second, one `--size`-byte message behind a 2-byte
//! header to every near end with one non-blocking `writev` each (exactly
//! what the hub does per delivery, minus the hub). It reports the writer
//! thread's CPU time per write and the deliveries per CPU-second that cost
//! allows at best. On loopback, the kernel charges the receiving side's TCP
//! work (and the wake-up of the reader's epoll) to the sender, so this is
//! the real floor of one delivery, not just the syscall.
//!
//! ```text
//! cargo run --release -p loadtest --bin write-floor -- --conns 9000 --rate 20 --duration 10s
//! ```
//!
//! Each pair holds two descriptors, so `--conns` is capped at 9,000 under the
//! 20,000 open-file limit. Loopback only; stops by itself.

use std::io::{IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::io::AsyncReadExt;

/// Measures the CPU cost of one loopback `writev` per delivery.
#[derive(Debug, Parser)]
#[command(name = "write-floor")]
struct Args {
    /// Connection pairs (each costs two descriptors).
    #[arg(long, default_value_t = 9_000)]
    conns: usize,
    /// Rounds per second; each round writes once to every connection.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Payload bytes per write (a diff frame is about 60).
    #[arg(long, default_value_t = 60)]
    size: usize,
    /// How long to write.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.conns == 0 || args.conns > 9_000 {
        bail!("--conns must be 1..=9000 (two descriptors each, 20,000 allowed)");
    }
    if args.rate == 0 || args.duration > Duration::from_secs(600) {
        bail!("--rate must be at least 1 and --duration at most 10m");
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut near = Vec::with_capacity(args.conns);
    let mut far = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let client = TcpStream::connect(addr).context("connect over loopback")?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        near.push(server);
        far.push(client);
    }
    drop(listener);

    let reader = std::thread::spawn(move || drain(far));
    let header = [0x82u8, u8::try_from(args.size.min(125)).unwrap_or(125)];
    let payload = vec![7u8; args.size];
    let every = Duration::from_secs(1) / args.rate;
    let started = Instant::now();
    let cpu_before = thread_cpu()?;
    let (mut writes, mut would_block) = (0u64, 0u64);
    let mut next = started;
    while started.elapsed() < args.duration {
        for socket in &mut near {
            let slices = [IoSlice::new(&header), IoSlice::new(&payload)];
            match socket.write_vectored(&slices) {
                Ok(_) => writes += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => return Err(e).context("loopback write"),
            }
        }
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = thread_cpu()? - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    drop(near);
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;

    let per_write_us = cpu * 1e6 / writes.max(1) as f64;
    println!(
        "connections      {} loopback pairs, {}-byte payload + 2-byte header, one writev each",
        args.conns, args.size
    );
    println!(
        "writes           {writes} in {wall:.1} s ({:.0}/s), {would_block} would have blocked, {read} bytes read by the fans' thread",
        writes as f64 / wall
    );
    println!("writer cpu       {cpu:.2} s: {per_write_us:.2} µs per write");
    println!(
        "floor            at most {:.0} deliveries per CPU-second with one write per delivery",
        1e6 / per_write_us
    );
    Ok(())
}

/// Reads every far end until all are closed; returns the bytes read.
fn drain(far: Vec<TcpStream>) -> Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = Vec::with_capacity(far.len());
        for socket in far {
            let mut socket = tokio::net::TcpStream::from_std(socket)?;
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut total = 0u64;
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                total
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await?;
        }
        Ok(total)
    })
}

/// CPU seconds (user + system) used by the calling thread so far.
fn thread_cpu() -> Result<f64> {
    let stat =
        std::fs::read_to_string("/proc/thread-self/stat").context("read /proc/thread-self/stat")?;
    // Fields after the parenthesised name; utime and stime are the 14th and
    // 15th fields overall, in clock ticks.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()? as f64)
    };
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}
