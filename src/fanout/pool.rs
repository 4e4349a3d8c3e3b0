//! The threads fan shards run on: a Tokio runtime of their own, optionally
//! below the rest of the hub in the operating system's scheduling priority.
//!
//! A big game's fan-out is most of a node's CPU (one loopback write costs
//! about 5 µs, so 10,000 fans are 50 ms of CPU per event). On the same
//! worker threads as everything else, a scorekeeper's POST would wait behind
//! a shard's slice of writes each time it needs a worker: the HTTP task, the
//! game's actor, the answer. On threads of their own, the shards never hold
//! a worker of the main runtime: an HTTP request or an actor woken by the
//! kernel gets its thread back at once, the kernel sharing the CPUs between
//! the two kinds of threads.
//!
//! `games.fan_nice` can lower the shards' threads further (a nice value that
//! much above the process's own, Linux), so that on busy CPUs the kernel
//! runs ingest first. That also yields the fan-out to every other process on
//! the machine, so it is off by default and meant for a hub that has its
//! CPUs to itself.
//!
//! A shard needs nothing of the runtime but its scheduler: its writes are
//! non-blocking system calls on sockets the main runtime owns, and what a
//! socket cannot take goes to the connection's writer task there.

use std::io;

use tokio::runtime::{Handle, Runtime};

/// The least favoured nice value a thread may have (Linux).
pub const LEAST_FAVOURED_NICE: i32 = 19;

/// A runtime for fan shards; shut down (without waiting) when dropped.
#[derive(Debug)]
pub struct FanoutPool {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl FanoutPool {
    /// Starts `threads` worker threads (at least 1) whose nice value is
    /// `nice` above the calling process's (0: the same priority). A thread
    /// whose priority cannot be lowered logs why and runs as is.
    pub fn start(threads: usize, nice: u8) -> io::Result<FanoutPool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("scorehub-fanout")
            .enable_time()
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        let handle = runtime.handle().clone();
        Ok(FanoutPool {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where fan shards are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

impl Drop for FanoutPool {
    fn drop(&mut self) {
        // Dropped inside the main runtime at the end of `serve`: a blocking
        // shutdown is not allowed there, and the shards have been flushed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Raises the calling thread's nice value by `by` (capped at the least
/// favoured value).
fn lower_priority(by: u8) {
    if by == 0 {
        return;
    }
    if let Err(e) = set_thread_nice(by) {
        tracing::warn!(
            error = %e,
            nice = by,
            "cannot lower the priority of a fan-out thread; fan-out runs at the priority of ingest"
        );
    }
}

#[cfg(target_os = "linux")]
fn set_thread_nice(by: u8) -> io::Result<()> {
    use rustix::process::{getpriority_process, setpriority_process};
    // On Linux the nice value belongs to the thread: with no pid these
    // calls read and set the calling thread's only.
    let now = getpriority_process(None)?;
    let wanted = (now + i32::from(by)).min(LEAST_FAVOURED_NICE);
    setpriority_process(None, wanted)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_thread_nice(_by: u8) -> io::Result<()> {
    // Elsewhere the call would lower the whole process.
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "per-thread priorities are only set on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    fn thread_nice() -> i32 {
        rustix::process::getpriority_process(None).expect("getpriority")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pool_threads_run_below_the_callers_priority() {
        let here = thread_nice();
        let pool = FanoutPool::start(2, 7).expect("pool");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            pool.handle().spawn(async move {
                let _ = tx.send(thread_nice());
            });
        }
        for _ in 0..4 {
            let nice = rx.recv().expect("a task ran");
            assert_eq!(nice, (here + 7).min(LEAST_FAVOURED_NICE));
        }
        // The caller is untouched.
        assert_eq!(thread_nice(), here);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn nice_zero_keeps_the_priority() {
        let here = thread_nice();
        let pool = FanoutPool::start(1, 0).expect("pool");
        let (tx, rx) = std::sync::mpsc::channel();
        pool.handle().spawn(async move {
            let _ = tx.send(thread_nice());
        });
        assert_eq!(rx.recv().expect("a task ran"), here);
    }

    #[tokio::test]
    async fn dropping_the_pool_inside_a_runtime_does_not_panic() {
        let pool = FanoutPool::start(1, 3).expect("pool");
        let done = pool.handle().spawn(async { 1 + 1 });
        assert_eq!(done.await.expect("joined"), 2);
        drop(pool);
    }
}
