//! What fans share of the frames they receive: each distinct frame decoded
//! once, and each merge patch applied once to each distinct state.
//!
//! The hub encodes a frame once and sends the same bytes to every fan of the
//! game, and the fans of one game hold the same state. Decoding those bytes
//! and applying the patch in every fan costs the load generator more CPU
//! than the hub spends writing them, and on one machine that CPU is taken
//! from the hub being measured. So fans look frames up here by their bytes:
//! the first fan decodes and keeps the result, the others reuse it; a diff
//! applied to a state another fan already applied it to yields the very
//! state that fan got. The checks stay exact, since a fan ends with what
//! applying its own frames in its own order gives, only computed once per
//! distinct case instead of once per fan.
//!
//! States are shared as `Arc<Value>`; a step remembers the state it started
//! from (keeping it alive, so its address names it) and the one it gave.
//! Snapshots of one state differ in their bytes (each carries the fan count
//! of its moment), so the state a snapshot brings is interned by content:
//! fans that start from equal states start from the same one, and their
//! later steps are shared.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{churn::state_hash, merge::merge_patch};

/// Distinct frames kept; the cache starts over beyond (the fans of one
/// frame all receive it within moments of each other).
const MAX_FRAMES: usize = 4096;

/// Distinct starting states a frame remembers its patch applied to (fans
/// of one game share one state; more happen only around resyncs).
const MAX_STEPS: usize = 8;

/// A server frame as sent, every key optional so that malformed frames are
/// counted instead of failing the fan.
#[derive(Debug, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    t: &'a str,
    #[serde(borrow, default)]
    g: Option<&'a str>,
    #[serde(default)]
    q: Option<u64>,
    #[serde(default)]
    d: Option<Value>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(borrow, default)]
    code: Option<&'a str>,
    #[serde(borrow, default)]
    msg: Option<&'a str>,
}

/// A decoded server frame, shared by every fan that received its bytes.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Kind: `s` snapshot, `d` diff, `e` error, `p` pong, `o` occupancy.
    pub(crate) t: Box<str>,
    /// Game id.
    pub(crate) g: Option<Box<str>>,
    /// Sequence number.
    pub(crate) q: Option<u64>,
    /// Full state (snapshot) or merge patch (diff).
    pub(crate) d: Option<Arc<Value>>,
    /// Server ingest time of a diff, Unix ms.
    pub(crate) ts: Option<u64>,
    /// Error code.
    pub(crate) code: Option<Box<str>>,
    /// Error message.
    pub(crate) msg: Option<Box<str>>,
    /// `d` applied as a merge patch: (state before, state after).
    steps: Mutex<Vec<(Arc<Value>, Arc<Value>)>>,
}

impl Frame {
    /// Decodes MessagePack `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Frame, rmp_serde::decode::Error> {
        let wire: Wire<'_> = rmp_serde::from_slice(bytes)?;
        Ok(Frame {
            t: wire.t.into(),
            g: wire.g.map(Into::into),
            q: wire.q,
            d: wire.d.map(Arc::new),
            ts: wire.ts,
            code: wire.code.map(Into::into),
            msg: wire.msg.map(Into::into),
            steps: Mutex::new(Vec::new()),
        })
    }

    /// The state `before` with this frame's `d` applied as a merge patch
    /// (`before` itself when there is no `d`).
    pub(crate) fn apply(&self, before: &Arc<Value>) -> Arc<Value> {
        let Some(patch) = &self.d else {
            return Arc::clone(before);
        };
        let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, after)) = steps.iter().find(|(from, _)| Arc::ptr_eq(from, before)) {
            return Arc::clone(after);
        }
        let mut next = Value::clone(before);
        merge_patch(&mut next, patch);
        let after = Arc::new(next);
        if steps.len() < MAX_STEPS {
            steps.push((Arc::clone(before), Arc::clone(&after)));
        }
        after
    }
}

/// Frames by their bytes, and the states snapshots brought by content.
#[derive(Debug, Default)]
pub(crate) struct FrameCache {
    frames: Mutex<HashMap<Box<[u8]>, Arc<Frame>>>,
    states: Mutex<HashMap<u64, Vec<Arc<Value>>>>,
}

impl FrameCache {
    /// The frame `bytes` encode, decoded by the first fan that asks.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Arc<Frame>, rmp_serde::decode::Error> {
        if let Some(frame) = self.lock().get(bytes) {
            return Ok(Arc::clone(frame));
        }
        // Decoded outside the lock: two fans may both decode a new frame
        // at once; either result is the same.
        let frame = Arc::new(Frame::decode(bytes)?);
        let mut frames = self.lock();
        if frames.len() >= MAX_FRAMES {
            frames.clear();
        }
        frames.insert(bytes.into(), Arc::clone(&frame));
        Ok(frame)
    }

    /// The state equal to `state` that an earlier caller got, or `state`
    /// itself when it is the first of its content.
    pub(crate) fn intern(&self, state: &Arc<Value>) -> Arc<Value> {
        let hash = state_hash(state);
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.len() >= MAX_FRAMES {
            states.clear();
        }
        let same = states.entry(hash).or_default();
        if let Some(known) = same.iter().find(|known| ***known == **state) {
            return Arc::clone(known);
        }
        if same.len() < MAX_STEPS {
            same.push(Arc::clone(state));
        }
        Arc::clone(state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<[u8]>, Arc<Frame>>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode(v: &Value) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn equal_bytes_are_decoded_once() {
        let cache = FrameCache::default();
        let bytes = encode(&json!({"t": "d", "g": "lt:g1", "q": 3, "ts": 7, "d": {"a": 1}}));
        let one = cache.decode(&bytes).unwrap();
        let two = cache.decode(&bytes).unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(
            (&*one.t, one.g.as_deref(), one.q, one.ts),
            ("d", Some("lt:g1"), Some(3), Some(7))
        );
        let other = cache
            .decode(&encode(&json!({"t": "d", "g": "lt:g1", "q": 4, "d": {}})))
            .unwrap();
        assert!(!Arc::ptr_eq(&one, &other));
    }

    #[test]
    fn undecodable_bytes_are_an_error() {
        assert!(FrameCache::default().decode(b"\x01\x02").is_err());
    }

    #[test]
    fn a_patch_applied_to_the_same_state_gives_the_same_state() {
        let frame = Frame::decode(&encode(
            &json!({"t": "d", "g": "g", "q": 1, "d": {"home": 2, "clock": null}}),
        ))
        .unwrap();
        let start = Arc::new(json!({"home": 1, "away": 0, "clock": "12:00"}));
        let a = frame.apply(&start);
        let b = frame.apply(&start);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, json!({"home": 2, "away": 0}));
        // Another state with the same content is patched on its own, to the
        // same content.
        let twin = Arc::new(Value::clone(&start));
        let c = frame.apply(&twin);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, *a);
        // The starting state is untouched.
        assert_eq!(*start, json!({"home": 1, "away": 0, "clock": "12:00"}));
    }

    #[test]
    fn many_starting_states_are_all_patched_right() {
        let frame = Frame::decode(&encode(&json!({"t": "d", "q": 1, "d": {"n": 1}}))).unwrap();
        for i in 0..(MAX_STEPS * 3) {
            let start = Arc::new(json!({ "i": i }));
            assert_eq!(*frame.apply(&start), json!({ "i": i, "n": 1 }));
        }
    }

    #[test]
    fn equal_states_are_interned_to_one() {
        let cache = FrameCache::default();
        let a = Arc::new(json!({"home": 1, "away": 2}));
        let b = Arc::new(json!({"away": 2, "home": 1}));
        let c = Arc::new(json!({"home": 1, "away": 3}));
        let first = cache.intern(&a);
        assert!(Arc::ptr_eq(&first, &a));
        assert!(Arc::ptr_eq(&cache.intern(&b), &a));
        assert!(Arc::ptr_eq(&cache.intern(&c), &c));
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = FrameCache::default();
        for q in 0..(MAX_FRAMES + 10) {
            let frame = cache
                .decode(&encode(&json!({"t": "d", "q": q, "d": {}})))
                .unwrap();
            assert_eq!(frame.q, Some(q as u64));
        }
        assert!(cache.lock().len() <= MAX_FRAMES);
    }
}
