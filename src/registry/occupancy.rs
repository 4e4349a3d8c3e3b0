//! Who watches: the node's one occupancy task.
//!
//! Counting costs nothing per delivery: each game's fans are counted when
//! they join or leave (`fanout::fans::FanCount`), never when a frame is
//! pushed. Every `occupancy.interval` this one task (not one per game)
//! reads the count of every loaded game, reports them all to the backend's
//! [`Occupancy`] in one step (over Redis: one pipeline, or on a Redis
//! Cluster one call per game's shard, all in flight together) and gets
//! back each game's count over every node. Each total goes to the game's
//! handle ([`GameHandle::set_watching`]), which `GET /v1/games/{id}` and
//! new snapshots read; a total that differs from what the game's fans were
//! last told becomes one occupancy frame from its actor. So a game's fans
//! get at most one occupancy frame per interval, and none while the count
//! stands still.
//!
//! Every loaded game is reported each tick, changed or not: the report is
//! also how the backend knows this node is alive (over Redis a report lives
//! `occupancy.ttl`), and the same call reads the other nodes' counts.
//!
//! When the backend cannot answer (Redis down), the games show this node's
//! own counts, the failure is logged once (and again once it recovers) and
//! counted in `scorehub_occupancy_reports_total{outcome="failed"}`; events
//! are never affected. At shutdown the task withdraws this node's reports,
//! so the other nodes stop counting its fans at once rather than after the
//! ttl.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::backend::Occupancy;
use crate::domain::GameId;
use crate::game::GameHandle;
use crate::metrics as m;

/// How long shutdown gives the withdrawal of this node's reports.
const WITHDRAW_TIMEOUT: Duration = Duration::from_millis(150);

/// Reports the fan counts of `registry`'s loaded games to `occupancy` every
/// `interval` and hands the totals to the games, until `shutdown` (then
/// withdraws this node's reports) or until the registry is gone.
pub async fn report_occupancy(
    registry: Weak<Registry>,
    occupancy: Arc<dyn Occupancy>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let Some(games) = registry.upgrade().map(|r| r.loaded()) else {
            return;
        };
        let counts: Vec<(GameId, u64)> = games
            .iter()
            .map(|g| (g.id().clone(), g.fans_here()))
            .collect();
        let reported = tokio::select! {
            r = occupancy.report(&counts) => r,
            () = shutdown.cancelled() => break,
        };
        let totals = match reported {
            Ok(totals) if totals.len() == counts.len() => {
                metrics::counter!(m::OCCUPANCY_REPORTS, "outcome" => "ok").increment(1);
                if std::mem::take(&mut failing) {
                    tracing::info!("occupancy: reporting fan counts works again");
                }
                totals
            }
            other => {
                metrics::counter!(m::OCCUPANCY_REPORTS, "outcome" => "failed").increment(1);
                if !std::mem::replace(&mut failing, true) {
                    let error = match other {
                        Err(e) => e.to_string(),
                        Ok(t) => format!("{} totals for {} games", t.len(), counts.len()),
                    };
                    tracing::warn!(
                        %error,
                        "occupancy: cannot report fan counts; games show this node's own fans until it can"
                    );
                }
                counts.iter().map(|(_, n)| *n).collect()
            }
        };
        hand_out(&games, &totals);
    }
    withdraw(&registry, occupancy.as_ref()).await;
}

/// Gives each game its total; counts the occupancy frames asked for.
fn hand_out(games: &[GameHandle], totals: &[u64]) {
    for (game, total) in games.iter().zip(totals) {
        game.set_watching(*total);
    }
}

/// Reports 0 fans of every loaded game (shutdown), bounded in time.
async fn withdraw(registry: &Weak<Registry>, occupancy: &dyn Occupancy) {
    let Some(games) = registry.upgrade().map(|r| r.loaded()) else {
        return;
    };
    let zeros: Vec<(GameId, u64)> = games.iter().map(|g| (g.id().clone(), 0)).collect();
    if zeros.is_empty() {
        return;
    }
    if let Ok(Err(e)) = tokio::time::timeout(WITHDRAW_TIMEOUT, occupancy.report(&zeros)).await {
        tracing::debug!(error = %e, "occupancy: could not withdraw this node's fan counts");
    }
}
