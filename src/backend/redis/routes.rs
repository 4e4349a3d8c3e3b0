//! Where the messages of each subscribed channel go: a followed game's
//! frames to its actor, a followed league's announcements to the registry.
//! Shared by both transports (classic and sharded pub/sub).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::backend::FrameSink;
use crate::domain::GameId;

/// Where a channel's messages go.
#[derive(Debug, Clone)]
enum Route {
    /// Diff frames of one game → its actor; the flag is set while a repair
    /// request waits for room in the mailbox (one is enough).
    Game(Arc<dyn FrameSink>, Arc<AtomicBool>),
    /// Ids of games created in a league → the registry.
    League,
}

/// The routed channels of one node.
#[derive(Debug)]
pub(super) struct Routes {
    map: DashMap<String, Route>,
    created: mpsc::Sender<GameId>,
}

impl Routes {
    /// No routes yet; announced game ids go to `created`.
    pub(super) fn new(created: mpsc::Sender<GameId>) -> Routes {
        Routes {
            map: DashMap::new(),
            created,
        }
    }

    /// Routes `channel`'s frames to `sink`.
    pub(super) fn follow_game(&self, channel: String, sink: Arc<dyn FrameSink>) {
        self.map
            .insert(channel, Route::Game(sink, Arc::new(AtomicBool::new(false))));
    }

    /// Routes `channel`'s announcements to the registry.
    pub(super) fn follow_league(&self, channel: String) {
        self.map.insert(channel, Route::League);
    }

    /// Stops routing `channel`.
    pub(super) fn remove(&self, channel: &str) {
        self.map.remove(channel);
    }

    /// Whether `channel` is routed.
    pub(super) fn contains(&self, channel: &str) -> bool {
        self.map.contains_key(channel)
    }

    /// Every routed channel.
    pub(super) fn channels(&self) -> Vec<String> {
        self.map.iter().map(|r| r.key().clone()).collect()
    }

    /// How many channels are routed.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The sinks of every followed game.
    pub(super) fn game_sinks(&self) -> Vec<Arc<dyn FrameSink>> {
        self.map
            .iter()
            .filter_map(|r| match r.value() {
                Route::Game(s, _) => Some(s.clone()),
                Route::League => None,
            })
            .collect()
    }

    /// The sink of `channel`, if it is a followed game's.
    pub(super) fn game_sink(&self, channel: &str) -> Option<Arc<dyn FrameSink>> {
        match self.map.get(channel).map(|r| r.clone()) {
            Some(Route::Game(sink, _)) => Some(sink),
            _ => None,
        }
    }

    /// Delivers one published message without waiting.
    pub(super) fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(route) = self.map.get(channel).map(|r| r.clone()) else {
            return;
        };
        match route {
            Route::Game(sink, repairing) => {
                if !sink.deliver(Bytes::copy_from_slice(payload)) {
                    if sink.is_closed() {
                        self.map.remove(channel);
                    } else if !repairing.swap(true, Ordering::AcqRel) {
                        // Mailbox full: the frame is dropped and the actor
                        // repairs from the stream once the request is queued
                        // (it covers every frame dropped until then).
                        tokio::spawn(async move {
                            sink.repair().await;
                            repairing.store(false, Ordering::Release);
                        });
                    }
                }
            }
            Route::League => {
                let id = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|s| GameId::parse(s).ok());
                match id {
                    Some(id) => {
                        if self.created.try_send(id).is_err() {
                            tracing::warn!(%channel, "league notification dropped: registry busy");
                        }
                    }
                    None => tracing::warn!(%channel, "bad game id on league channel"),
                }
            }
        }
    }
}
