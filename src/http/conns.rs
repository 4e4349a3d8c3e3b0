//! The table of open HTTP connections: who may connect, and who makes room.
//!
//! A connection is admitted while fewer than `http.max_connections` plain
//! HTTP connections are open **and** HTTP connections plus fan connections
//! stay below the open-file budget ([`crate::limits::http_caps`]).
//! A connection upgraded to a WebSocket leaves this table when hyper hands
//! it over; from then on it counts as a fan (`limits.max_connections`).
//!
//! When the table is full, the connection idle longest (no request in
//! flight; a connection still reading a request head counts as idle since
//! before the head began) is closed to make room, as nginx reuses idle
//! keep-alive connections when it runs out: idle connections are cheap to
//! open, so letting them lock out a scorekeeper, or the orchestrator's
//! probe, would hand the hub to whoever opens the most. Only when every
//! connection has a request in flight (reading a body, bounded by
//! `http.body_timeout`, or in a handler) is the new one refused: it gets a
//! best-effort `503 too_many_connections` and is closed at once, so a client
//! learns at once instead of waiting in the kernel's backlog. Refusals
//! count in `scorehub_rate_limited_total{kind="http_capacity"}`, evictions
//! in `scorehub_http_closed_total{reason="evicted"}`.
//!
//! While an evicted connection closes (one poll of its task), the table
//! holds one more than the cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::{ErrorBody, ErrorEnvelope};
use crate::limits::{FULL_RETRY_AFTER, HttpCaps, Limits, TOO_MANY_CONNECTIONS};
use crate::metrics as m;
use crate::net::Activity;

/// The open HTTP connections of one hub.
pub(crate) struct Conns {
    /// What every connection's [`Activity`] counts time from.
    epoch: Instant,
    /// Most plain HTTP connections (`http.max_connections`, fitted).
    cap: usize,
    /// Most HTTP + fan connections (the open-file limit less the reserve);
    /// `None`: unlimited.
    budget: Option<usize>,
    /// Where the open fan connections are counted.
    limits: Arc<Limits>,
    open: AtomicUsize,
    next_id: AtomicU64,
    table: Mutex<HashMap<u64, Arc<Activity>>>,
    /// The answer a refused connection gets, made once.
    refusal: Bytes,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("cap", &self.cap)
            .field("budget", &self.budget)
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

impl Conns {
    /// An empty table with `caps`, next to the fan slots of `limits`.
    pub(crate) fn new(caps: HttpCaps, limits: Arc<Limits>) -> Arc<Conns> {
        Arc::new(Conns {
            epoch: Instant::now(),
            cap: caps.http,
            budget: caps.total,
            limits,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            table: Mutex::new(HashMap::new()),
            refusal: refusal(caps.http),
        })
    }

    /// Open HTTP connections.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Admits a new connection, closing the longest-idle one when the table
    /// is full; `None` when the table is full and no connection is idle.
    /// Called by the accept loop only (one caller at a time).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let open = self.open();
        let fans = self.limits.open_connections();
        let fits = open < self.cap && self.budget.is_none_or(|b| open + fans < b);
        if !fits {
            if !self.evict_longest_idle() {
                metrics::counter!(m::RATE_LIMITED, "kind" => "http_capacity").increment(1);
                return None;
            }
            metrics::counter!(m::HTTP_CLOSED, "reason" => "evicted").increment(1);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(m::HTTP_CONNECTIONS).increment(1.0);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        self.lock().insert(id, activity.clone());
        Some(Admitted {
            conns: self.clone(),
            id,
            activity,
        })
    }

    /// Chooses the connection idle longest and tells it to close; `false`
    /// when every connection has a request in flight.
    fn evict_longest_idle(&self) -> bool {
        let table = self.lock();
        let victim = table
            .values()
            .filter(|a| !a.in_flight() && !a.is_evicted())
            .min_by_key(|a| a.idle_since());
        match victim {
            Some(victim) => victim.evict(),
            None => false,
        }
    }

    /// The bytes to write to a refused connection before closing it.
    pub(crate) fn refusal(&self) -> &[u8] {
        &self.refusal
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // The map holds no invariant a panic elsewhere could break.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An admitted connection's place in the table; leaving it drops it.
#[derive(Debug)]
pub(crate) struct Admitted {
    conns: Arc<Conns>,
    id: u64,
    activity: Arc<Activity>,
}

impl Admitted {
    /// What the connection is doing.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
        self.conns.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(m::HTTP_CONNECTIONS).decrement(1.0);
    }
}

/// `503 too_many_connections` as raw HTTP/1.1, with `Connection: close`.
fn refusal(cap: usize) -> Bytes {
    let secs = FULL_RETRY_AFTER.as_secs();
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: TOO_MANY_CONNECTIONS,
            message: format!(
                "the hub already holds its maximum of {cap} HTTP connections, each with a request in flight; retry in {secs} s"
            ),
        },
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    Bytes::from(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {secs}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::LimitsConfig;

    use super::*;

    fn conns(http: usize, total: Option<usize>) -> (Arc<Conns>, Arc<Limits>) {
        let limits = Arc::new(Limits::new(&LimitsConfig::default()));
        let caps = HttpCaps { http, total };
        (Conns::new(caps, limits.clone()), limits)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_closes_the_longest_idle_connection_to_admit_one() {
        let (conns, _) = conns(3, None);
        let a = conns.admit().unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let b = conns.admit().unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let c = conns.admit().unwrap();
        // `a` is busy: `b` has been idle longest.
        a.activity().begin_request();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let d = conns.admit().expect("room made");
        assert!(b.activity().is_evicted());
        assert!(!a.activity().is_evicted() && !c.activity().is_evicted());
        assert_eq!(conns.open(), 4, "until the evicted one has closed");
        drop(b);
        assert_eq!(conns.open(), 3);
        // Next to go: c (idle since before d).
        let _e = conns.admit().expect("room made");
        assert!(c.activity().is_evicted());
        drop(c);
        // All busy: refused.
        d.activity().begin_request();
        _e.activity().begin_request();
        assert!(conns.admit().is_none());
        assert_eq!(conns.open(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fans_count_against_the_open_file_budget() {
        let (conns, limits) = conns(100, Some(3));
        let local = "127.0.0.1".parse().unwrap();
        let _fan = limits.admit_fan(local).unwrap();
        let _fan2 = limits.admit_fan(local).unwrap();
        let one = conns.admit().unwrap();
        one.activity().begin_request();
        assert!(
            conns.admit().is_none(),
            "2 fans + 1 HTTP connection fill a budget of 3"
        );
    }

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let (conns, _) = conns(7, None);
        let text = std::str::from_utf8(conns.refusal()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
        assert!(json["error"]["message"].as_str().unwrap().contains('7'));
    }
}
