//! What one HTTP connection is doing, as its timeouts need to know it: an
//! [`Activity`] record, and the [`Watched`] TCP stream that feeds it.
//!
//! hyper's HTTP/1 server has a header-read timeout, but it runs whenever
//! hyper waits for a request head, keep-alive waits included, so it cannot
//! tell a client trickling its headers from one resting between requests;
//! and it has no idle timeout at all. The hub tells them apart itself:
//!
//! - **idle**: no request in flight and no byte of the next one yet, since
//!   [`Activity::idle_since`] (a new connection starts idle);
//! - **reading a head**: the first byte of a request arrived (seen by
//!   [`Watched`]) and hyper has not handed the request to the router yet;
//! - **in flight**: the router has the request, until the response body
//!   ends ([`Activity::begin_request`], [`Activity::end_request`]).
//!
//! The connection's task ([`crate::http::serve`]) reads [`Activity::verdict`]
//! and closes the connection when the state has lasted too long. Every
//! update happens on that task (hyper polls the stream, the router and the
//! response body from it), so the atomics are uncontended.
//!
//! [`Watched`] is unwrapped again when a connection is upgraded to a
//! WebSocket ([`Watched::into_tcp`]), so fans keep their plain TCP stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// `head_since` while no request head is being read.
const NO_HEAD: u64 = u64::MAX;

/// The two connection timeouts an [`Activity`] is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// A request head must arrive whole within this long of its first byte.
    pub(crate) header_read: Duration,
    /// A connection may be idle this long.
    pub(crate) idle: Duration,
}

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head started and did not finish within the header timeout.
    HeaderRead,
    /// No request for the idle timeout.
    Idle,
}

impl Expiry {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "header_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

/// What a connection's timeouts say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing is due before this instant; look again then (or when woken).
    Until(Instant),
    /// The connection's time is up.
    Expired(Expiry),
}

/// What one connection is doing; shared by its stream, its requests and its
/// task, and listed in the connection table for eviction.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The instant every `*_since` below counts from.
    epoch: Instant,
    /// When the connection last became idle, in ns since `epoch`.
    idle_since: AtomicU64,
    /// When the first byte of the request head being read arrived, in ns
    /// since `epoch`; [`NO_HEAD`] when none is.
    head_since: AtomicU64,
    /// Requests handed to the router whose response has not ended.
    in_flight: AtomicU32,
    /// Set once when the connection table chose this connection to close.
    evicted: AtomicBool,
    /// Wakes the connection's task: a head started, or it was evicted.
    wake: Notify,
}

impl Activity {
    /// A connection accepted now, idle, timed against `epoch`.
    pub(crate) fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NO_HEAD),
            in_flight: AtomicU32::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        };
        activity.idle_since.store(activity.now(), Ordering::Relaxed);
        activity
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    fn at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Bytes arrived: when the connection was idle, a request head starts.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_since.store(self.now(), Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// hyper handed a request to the router.
    pub(crate) fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// A response ended (or its request was dropped).
    pub(crate) fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.head_since.store(NO_HEAD, Ordering::Relaxed);
            self.idle_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Whether a request is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// When the connection last became idle (for choosing whom to evict:
    /// the smallest goes first). A connection reading a head keeps the time
    /// it became idle before the head began, so a slow head ranks as old.
    pub(crate) fn idle_since(&self) -> u64 {
        self.idle_since.load(Ordering::Relaxed)
    }

    /// What the timeouts say at `now`. A connection with a request in flight
    /// has no deadline here (its body has its own, [`crate::http::bodies`]);
    /// it is looked at again one idle timeout later.
    pub(crate) fn verdict(&self, timeouts: Timeouts, now: Instant) -> Verdict {
        if self.in_flight() {
            return Verdict::Until(now + timeouts.idle);
        }
        let (since, limit, expiry) = match self.head_since.load(Ordering::Relaxed) {
            NO_HEAD => (self.idle_since(), timeouts.idle, Expiry::Idle),
            head => (head, timeouts.header_read, Expiry::HeaderRead),
        };
        let due = self.at(since) + limit;
        if now >= due {
            Verdict::Expired(expiry)
        } else {
            Verdict::Until(due)
        }
    }

    /// Marks the connection as chosen for eviction and wakes its task;
    /// `false` when it already was.
    pub(crate) fn evict(&self) -> bool {
        let first = !self.evicted.swap(true, Ordering::Relaxed);
        if first {
            self.wake.notify_one();
        }
        first
    }

    /// Whether the connection table chose this connection to close.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Completes when something the task must look at changed: a request
    /// head started, or the connection was evicted.
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// A TCP stream that tells its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub(crate) struct Watched {
    tcp: TcpStream,
    activity: std::sync::Arc<Activity>,
}

impl Watched {
    /// `tcp`, reporting reads to `activity`.
    pub(crate) fn new(tcp: TcpStream, activity: std::sync::Arc<Activity>) -> Watched {
        Watched { tcp, activity }
    }

    /// The plain stream again (for a connection upgraded to a WebSocket).
    pub(crate) fn into_tcp(self) -> TcpStream {
        self.tcp
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(2),
        idle: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let epoch = Instant::now();
        let a = Activity::new(epoch);
        assert_eq!(a.verdict(T, Instant::now()), Verdict::Until(epoch + T.idle));
        tokio::time::advance(T.idle).await;
        assert_eq!(a.verdict(T, Instant::now()), Verdict::Expired(Expiry::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_has_the_header_timeout_from_its_first_byte() {
        let epoch = Instant::now();
        let a = Activity::new(epoch);
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read();
        let first_byte = Instant::now();
        // More bytes do not move the deadline.
        tokio::time::advance(Duration::from_secs(1)).await;
        a.on_read();
        assert_eq!(
            a.verdict(T, Instant::now()),
            Verdict::Until(first_byte + T.header_read)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            a.verdict(T, Instant::now()),
            Verdict::Expired(Expiry::HeaderRead)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_deadline_and_its_end_restarts_idle() {
        let epoch = Instant::now();
        let a = Activity::new(epoch);
        a.on_read();
        a.begin_request();
        // Body bytes while in flight start no head.
        a.on_read();
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        assert_eq!(a.verdict(T, now), Verdict::Until(now + T.idle));
        a.end_request();
        assert!(!a.in_flight());
        assert_eq!(a.verdict(T, now), Verdict::Until(now + T.idle));
        // The next request's first byte starts the header timeout.
        tokio::time::advance(Duration::from_secs(1)).await;
        a.on_read();
        let head = Instant::now();
        assert_eq!(a.verdict(T, head), Verdict::Until(head + T.header_read));
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_is_signalled_once() {
        let a = Activity::new(Instant::now());
        assert!(!a.is_evicted());
        assert!(a.evict());
        assert!(!a.evict(), "already chosen");
        assert!(a.is_evicted());
        // The wake-up was stored for the task.
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .expect("woken");
    }
}
