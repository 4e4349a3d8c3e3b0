//! The hubs' own latency histograms, read from `GET /metrics` at the
//! measured window's edges: fan-out time and the event route's request
//! duration as the hub measured them, free of the load generator's own CPU
//! queueing (which the fans' figures include on a small machine).
//!
//! The parsing, subtraction and quantiles are pure functions over the
//! Prometheus text exposition format; [`scrape`] is the only IO.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::Api;

/// Histogram: event accepted → frame handed to every local socket writer.
/// A hub applying another hub's diffs (two-nodes, cluster) records the
/// wall-clock lag from the frame's `ts` instead, in whole milliseconds.
pub(crate) const FANOUT: &str = "scorehub_fanout_seconds";

/// Histogram `{route}`: HTTP request latency by route template.
pub(crate) const HTTP_DURATION: &str = "scorehub_http_request_duration_seconds";

/// Histogram: one group commit of the embedded event log (its write and,
/// with `storage.fsync`, its fdatasync). Absent on a hub storing in Redis.
pub(crate) const LOG_SYNC: &str = "scorehub_log_sync_seconds";

/// The route template of `POST /v1/games/{id}/events`. The hub labels its
/// request histogram by route only, so a `GET` of the same route's history
/// would count too; the run sends none while measuring.
pub(crate) const EVENT_ROUTE: &str = "/v1/games/{id}/events";

/// A cumulative histogram: `(le, count of samples ≤ le)` by increasing
/// `le`, `+Inf` as [`f64::INFINITY`]. Empty when the hub has no such series.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Buckets(pub(crate) Vec<(f64, u64)>);

impl Buckets {
    /// Samples in all (the `+Inf` bucket's count, or the largest count).
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().map(|&(_, n)| n).max().unwrap_or(0)
    }

    /// Adds `other`'s counts bucket by bucket (both cumulative, so the sum is).
    pub(crate) fn add(&mut self, other: &Buckets) {
        let mut by_le = self.by_le();
        for &(le, n) in &other.0 {
            *by_le.entry(Le(le)).or_insert(0) += n;
        }
        self.0 = by_le.into_iter().map(|(Le(le), n)| (le, n)).collect();
    }

    /// The counts keyed by bound, in order.
    fn by_le(&self) -> BTreeMap<Le, u64> {
        self.0.iter().map(|&(le, n)| (Le(le), n)).collect()
    }
}

/// A bucket bound ordered by [`f64::total_cmp`], so it can key a map.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Le(f64);

impl Eq for Le {}

impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Reads histogram `name`'s `_bucket` lines whose labels include every
/// `(label, value)` of `filter` from `text` (Prometheus text exposition),
/// summing series that differ in other labels. A line that cannot be read
/// is an error; no matching line gives empty [`Buckets`].
pub(crate) fn parse_buckets(
    text: &str,
    name: &str,
    filter: &[(&str, &str)],
) -> Result<Buckets, String> {
    let series = format!("{name}_bucket");
    let mut by_le = BTreeMap::new();
    for_each_series(text, &series, filter, |labels, value| {
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| parse_le(v))
            .ok_or_else(|| "no `le` label".to_string())??;
        *by_le.entry(Le(le)).or_insert(0) += parse_count(value)?;
        Ok(())
    })?;
    Ok(Buckets(
        by_le.into_iter().map(|(Le(le), n)| (le, n)).collect(),
    ))
}

/// Reads histogram `name`'s `_sum` (seconds in all) over the series whose
/// labels include every `(label, value)` of `filter`; 0 without one.
pub(crate) fn parse_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> Result<f64, String> {
    let mut sum = 0.0;
    for_each_series(text, &format!("{name}_sum"), filter, |_, value| {
        sum += value.parse::<f64>().map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(sum)
}

/// Calls `each(labels, value)` for every line of `series` whose labels
/// include every `(label, value)` of `filter`; an error names the series
/// and the line.
fn for_each_series(
    text: &str,
    series: &str,
    filter: &[(&str, &str)],
    mut each: impl FnMut(&Labels, &str) -> Result<(), String>,
) -> Result<(), String> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(series) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // Another metric whose name starts with this one's.
        }
        let in_line = |e: String| format!("{series}: {e} in line {line:?}");
        let (labels, value) = split_labels(rest).map_err(in_line)?;
        let wanted = filter
            .iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
        if wanted {
            each(&labels, value).map_err(in_line)?;
        }
    }
    Ok(())
}

/// A series' labels, `(name, unescaped value)`, in the order written.
type Labels = Vec<(String, String)>;

/// Splits `{k="v",...} value [timestamp]` (or ` value`) into its labels,
/// unescaped, and the value.
fn split_labels(rest: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let after = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end = loop {
            while chars.next_if(|&(_, c)| c == ',' || c == ' ').is_some() {}
            match chars.peek() {
                Some(&(i, '}')) => break i + 1,
                Some(_) => {}
                None => return Err("unclosed `{`".into()),
            }
            let mut key = String::new();
            loop {
                match chars.next() {
                    Some((_, '=')) => break,
                    Some((_, c)) => key.push(c),
                    None => return Err("a label without `=`".into()),
                }
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key:?} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("a label value ends in `\\`".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key:?}'s value is not closed")),
                }
            }
            labels.push((key.trim().to_string(), value));
        };
        &body[end..]
    } else {
        rest
    };
    let value = after
        .split_whitespace()
        .next()
        .ok_or_else(|| "no value".to_string())?;
    Ok((labels, value))
}

/// A bucket bound: a number, or `+Inf`.
fn parse_le(le: &str) -> Result<f64, String> {
    match le {
        "+Inf" | "Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        _ => le
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("bound le={le:?} is not a number")),
    }
}

/// A bucket count: an integer, possibly written as a float (`3e+00`).
fn parse_count(value: &str) -> Result<u64, String> {
    if let Ok(n) = value.parse::<u64>() {
        return Ok(n);
    }
    match value.parse::<f64>() {
        // Counts are whole numbers well below 2^53.
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 => Ok(v as u64),
        _ => Err(format!("count {value:?} is not a whole number")),
    }
}

/// What was recorded between two scrapes of one hub: `after − before`, bucket
/// by bucket (a bucket missing before counts as 0). A count that went down
/// means the hub restarted between them, which is an error.
pub(crate) fn between(before: &Buckets, after: &Buckets) -> Result<Buckets, String> {
    let mut old = before.by_le();
    let mut out = Vec::with_capacity(after.0.len());
    for &(le, n) in &after.0 {
        let was = old.remove(&Le(le)).unwrap_or(0);
        let diff = n.checked_sub(was).ok_or_else(|| {
            format!("bucket le={le} went from {was} to {n}: did the hub restart?")
        })?;
        out.push((le, diff));
    }
    if let Some((Le(le), _)) = old.into_iter().next() {
        return Err(format!(
            "bucket le={le} vanished between the scrapes: did the hub restart?"
        ));
    }
    Ok(Buckets(out))
}

/// The upper bound `le` of the bucket holding quantile `q` (0..=1): the first
/// bucket whose count reaches `ceil(q × total)`. `None` without samples;
/// [`f64::INFINITY`] when it lies above the last finite bound.
pub(crate) fn quantile_le(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.total();
    if total == 0 {
        return None;
    }
    // The rank is at most `total`, which is far below f64's exact-integer range.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    buckets
        .0
        .iter()
        .find(|&&(_, n)| n >= rank)
        .map(|&(le, _)| le)
}

/// A hub-side latency summary in milliseconds: bucket upper bounds, not
/// exact values ("p99 ≤ 2.5 ms").
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct HubLatency {
    /// Samples in the window, over all hubs.
    pub(crate) count: u64,
    /// Upper bound of the median's bucket, ms (`null`: no samples, or above
    /// the last finite bucket).
    pub(crate) p50_le: Option<f64>,
    /// Upper bound of the 90th percentile's bucket, ms.
    pub(crate) p90_le: Option<f64>,
    /// Upper bound of the 99th percentile's bucket, ms.
    pub(crate) p99_le: Option<f64>,
    /// The mean, ms, exact (from the histogram's sum); `null` without samples.
    pub(crate) mean: Option<f64>,
    /// The largest finite bound, ms, for "> X ms" when a quantile is above it.
    #[serde(skip)]
    pub(crate) last_le: Option<f64>,
    /// Which quantiles (50, 90, 99) lie above the last finite bound.
    #[serde(skip)]
    pub(crate) above: [bool; 3],
}

impl HubLatency {
    /// Summarises `buckets` (bounds in seconds) in milliseconds.
    pub(crate) fn from_seconds(buckets: &Buckets, sum_s: f64) -> Self {
        let ms = |s: f64| (s * 1e9).round() / 1e6;
        let at = |q| quantile_le(buckets, q);
        let [p50, p90, p99] = [at(0.50), at(0.90), at(0.99)];
        let finite = |v: Option<f64>| v.filter(|s| s.is_finite()).map(ms);
        let above = |v: Option<f64>| v.is_some_and(f64::is_infinite);
        Self {
            count: buckets.total(),
            p50_le: finite(p50),
            p90_le: finite(p90),
            p99_le: finite(p99),
            mean: (buckets.total() > 0)
                .then(|| (sum_s / buckets.total() as f64 * 1e6).round() / 1e3),
            last_le: buckets
                .0
                .iter()
                .rev()
                .map(|&(le, _)| le)
                .find(|le| le.is_finite())
                .map(ms),
            above: [above(p50), above(p90), above(p99)],
        }
    }
}

/// One histogram of every scraped hub, summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Histogram {
    /// [`FANOUT`].
    Fanout,
    /// [`HTTP_DURATION`] of [`EVENT_ROUTE`].
    Post,
    /// [`LOG_SYNC`].
    LogSync,
}

impl Histogram {
    /// Parses this histogram out of one scrape.
    fn parse(self, text: &str) -> Result<(Buckets, f64), String> {
        let (name, filter): (_, &[(&str, &str)]) = match self {
            Histogram::Fanout => (FANOUT, &[]),
            Histogram::Post => (HTTP_DURATION, &[("route", EVENT_ROUTE)]),
            Histogram::LogSync => (LOG_SYNC, &[]),
        };
        Ok((
            parse_buckets(text, name, filter)?,
            parse_sum(text, name, filter)?,
        ))
    }

    /// Its name in notes.
    fn name(self) -> &'static str {
        match self {
            Histogram::Fanout => FANOUT,
            Histogram::LogSync => LOG_SYNC,
            Histogram::Post => {
                "scorehub_http_request_duration_seconds{route=\"/v1/games/{id}/events\"}"
            }
        }
    }
}

/// One scrape of every hub, in order: each page's text or why it failed.
pub(crate) type Scrape = Vec<(String, Result<String, String>)>;

/// `GET /metrics` of every hub in `apis`, at once. Never fails: a hub that
/// does not answer has its error in its place.
pub(crate) async fn scrape(apis: &[Api]) -> Scrape {
    let pages = futures_util::future::join_all(apis.iter().map(Api::metrics)).await;
    apis.iter()
        .zip(pages)
        .map(|(api, page)| (api.base().to_string(), page.map_err(|e| format!("{e:#}"))))
        .collect()
}

/// `histogram` over the window between scrapes `before` and `after` (same
/// hubs, same order), summed over hubs; `Err` says why it is unknown (the
/// figures of some hubs only would mislead).
pub(crate) fn window(
    histogram: Histogram,
    before: &Scrape,
    after: &Scrape,
) -> Result<HubLatency, String> {
    if before.is_empty() {
        return Err("no hub to scrape".into());
    }
    let mut all = Buckets::default();
    let mut seconds = 0.0;
    for ((hub, start), (_, end)) in before.iter().zip(after) {
        let (in_window, sum) =
            one_hub(histogram, start, end).map_err(|e| format!("{hub}/metrics: {e}"))?;
        all.add(&in_window);
        seconds += sum;
    }
    Ok(HubLatency::from_seconds(&all, seconds))
}

/// `histogram` between one hub's two pages, and the seconds it summed.
fn one_hub(
    histogram: Histogram,
    start: &Result<String, String>,
    end: &Result<String, String>,
) -> Result<(Buckets, f64), String> {
    let start = start.as_ref().map_err(Clone::clone)?;
    let end = end.as_ref().map_err(Clone::clone)?;
    let (first, first_sum) = histogram.parse(start)?;
    let (last, last_sum) = histogram.parse(end)?;
    Ok((between(&first, &last)?, (last_sum - first_sum).max(0.0)))
}

/// `window`'s result for the report, and a note when it is unknown.
pub(crate) fn report(
    histogram: Histogram,
    before: &Scrape,
    after: &Scrape,
) -> (Option<HubLatency>, Option<String>) {
    match window(histogram, before, after) {
        Ok(latency) => (Some(latency), None),
        Err(e) => (
            None,
            Some(format!("hub-side {} unknown: {e}", histogram.name())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Buckets, Histogram, HubLatency, between, parse_buckets, quantile_le, split_labels, window,
    };

    /// A page as the hub renders it (metrics-exporter-prometheus).
    const PAGE: &str = r#"# HELP scorehub_fanout_seconds From event accepted to frame handed to every local socket writer.
# TYPE scorehub_fanout_seconds histogram
scorehub_fanout_seconds_bucket{le="0.00005"} 0
scorehub_fanout_seconds_bucket{le="0.0001"} 2
scorehub_fanout_seconds_bucket{le="0.00025"} 7
scorehub_fanout_seconds_bucket{le="1"} 10
scorehub_fanout_seconds_bucket{le="+Inf"} 10
scorehub_fanout_seconds_sum 0.01
scorehub_fanout_seconds_count 10
scorehub_fanout_seconds_total_whatever 99
# TYPE scorehub_http_request_duration_seconds histogram
scorehub_http_request_duration_seconds_bucket{route="/v1/games/{id}/events",le="0.0005"} 3
scorehub_http_request_duration_seconds_bucket{route="/v1/games/{id}/events",le="0.001"} 5
scorehub_http_request_duration_seconds_bucket{route="/v1/games/{id}/events",le="+Inf"} 6
scorehub_http_request_duration_seconds_bucket{le="0.0005",route="/v1/games/{id}/events",method="POST"} 1
scorehub_http_request_duration_seconds_bucket{le="0.001",route="/v1/games/{id}/events",method="POST"} 1
scorehub_http_request_duration_seconds_bucket{le="+Inf",route="/v1/games/{id}/events",method="POST"} 2
scorehub_http_request_duration_seconds_bucket{route="/metrics",le="0.0005"} 40
scorehub_http_request_duration_seconds_bucket{route="/metrics",le="0.001"} 40
scorehub_http_request_duration_seconds_bucket{route="/metrics",le="+Inf"} 40
"#;

    fn b(pairs: &[(f64, u64)]) -> Buckets {
        Buckets(pairs.to_vec())
    }

    #[test]
    fn parses_one_histogram_without_labels() {
        let fanout = parse_buckets(PAGE, "scorehub_fanout_seconds", &[]).expect("parses");
        assert_eq!(
            fanout,
            b(&[
                (0.000_05, 0),
                (0.000_1, 2),
                (0.000_25, 7),
                (1.0, 10),
                (f64::INFINITY, 10)
            ])
        );
        assert_eq!(fanout.total(), 10);
    }

    #[test]
    fn filters_by_label_in_any_order_and_sums_the_other_labels() {
        let post = parse_buckets(
            PAGE,
            "scorehub_http_request_duration_seconds",
            &[("route", "/v1/games/{id}/events")],
        )
        .expect("parses");
        assert_eq!(post, b(&[(0.000_5, 4), (0.001, 6), (f64::INFINITY, 8)]));
        let none = parse_buckets(
            PAGE,
            "scorehub_http_request_duration_seconds",
            &[("route", "/v1/nothing")],
        )
        .expect("parses");
        assert_eq!(none, Buckets::default());
        assert_eq!(none.total(), 0);
    }

    #[test]
    fn label_values_keep_braces_commas_and_escaped_quotes() {
        let (labels, value) =
            split_labels(r#"{route="/a/{id},x",note="say \"hi\"\\",le="1"} 5 1700000000"#)
                .expect("parses");
        assert_eq!(value, "5");
        assert_eq!(labels[0], ("route".into(), "/a/{id},x".into()));
        assert_eq!(labels[1], ("note".into(), "say \"hi\"\\".into()));
        assert_eq!(labels[2], ("le".into(), "1".into()));
        assert!(split_labels(r#"{le="1} 5"#).is_err());
        assert!(parse_buckets("m_bucket{le=\"x\"} 1", "m", &[]).is_err());
        assert!(parse_buckets("m_bucket{route=\"a\"} 1", "m", &[]).is_err());
        assert!(parse_buckets("m_bucket{le=\"1\"} many", "m", &[]).is_err());
        assert_eq!(
            parse_buckets("m_bucket{le=\"1\"} 3e0", "m", &[]).expect("a float count"),
            b(&[(1.0, 3)])
        );
    }

    #[test]
    fn the_window_is_the_difference_of_two_scrapes() {
        let before = b(&[(0.001, 5), (0.01, 8), (f64::INFINITY, 9)]);
        let after = b(&[(0.001, 5), (0.01, 18), (f64::INFINITY, 20)]);
        assert_eq!(
            between(&before, &after),
            Ok(b(&[(0.001, 0), (0.01, 10), (f64::INFINITY, 11)]))
        );
        // A series first seen after the window began counts from 0.
        assert_eq!(between(&Buckets::default(), &after), Ok(after.clone()));
        assert!(between(&after, &before).is_err(), "counts went down");
        assert!(
            between(&after, &Buckets::default()).is_err(),
            "series vanished"
        );
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_bucket() {
        let h = b(&[(0.001, 50), (0.01, 90), (0.1, 99), (f64::INFINITY, 100)]);
        assert_eq!(quantile_le(&h, 0.50), Some(0.001));
        assert_eq!(quantile_le(&h, 0.51), Some(0.01));
        assert_eq!(quantile_le(&h, 0.90), Some(0.01));
        assert_eq!(quantile_le(&h, 0.99), Some(0.1));
        assert_eq!(quantile_le(&h, 0.999), Some(f64::INFINITY));
        assert_eq!(
            quantile_le(&h, 0.0),
            Some(0.001),
            "at least the first sample"
        );
        let zero = b(&[(0.001, 0), (f64::INFINITY, 0)]);
        assert_eq!(quantile_le(&zero, 0.5), None);
        assert_eq!(quantile_le(&Buckets::default(), 0.5), None);
    }

    #[test]
    fn summaries_are_in_milliseconds_and_infinity_is_null() {
        let h = b(&[
            (0.000_05, 1),
            (0.002_5, 95),
            (1.0, 98),
            (f64::INFINITY, 100),
        ]);
        let s = HubLatency::from_seconds(&h, 0.25);
        assert_eq!(s.count, 100);
        assert_eq!(s.mean, Some(2.5), "0.25 s over 100 samples");
        assert_eq!(s.p50_le, Some(2.5));
        assert_eq!(s.p90_le, Some(2.5));
        assert_eq!(s.p99_le, None);
        assert_eq!(s.above, [false, false, true]);
        assert_eq!(s.last_le, Some(1000.0));
        let json = serde_json::to_value(s).expect("encodes");
        assert_eq!(
            json,
            serde_json::json!({"count": 100, "p50_le": 2.5, "p90_le": 2.5, "p99_le": null, "mean": 2.5})
        );
        let empty = HubLatency::from_seconds(&Buckets::default(), 0.0);
        assert_eq!(empty.count, 0);
        assert_eq!(empty.mean, None);
        assert_eq!(empty.p50_le, None);
        assert_eq!(empty.above, [false; 3]);
    }

    #[test]
    fn hubs_are_summed_and_a_failed_scrape_makes_the_figure_unknown() {
        let page = |n: u64| {
            format!(
                "scorehub_fanout_seconds_bucket{{le=\"0.001\"}} {n}\n\
                 scorehub_fanout_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 scorehub_fanout_seconds_sum {}\n",
                n + 1,
                n as f64 * 0.001
            )
        };
        let hub = |name: &str, text: String| (name.to_string(), Ok(text));
        let before = vec![hub("a", page(1)), hub("b", page(10))];
        let after = vec![hub("a", page(5)), hub("b", page(20))];
        let fanout = window(Histogram::Fanout, &before, &after).expect("known");
        // (5 - 1) + (20 - 10) samples ≤ 1 ms, each hub's +Inf one more.
        assert_eq!(fanout.count, 14);
        assert_eq!(fanout.p99_le, Some(1.0));
        // (0.005 - 0.001) + (0.020 - 0.010) s over 14 samples.
        assert_eq!(fanout.mean, Some(1.0));
        let post = window(Histogram::Post, &before, &after).expect("known");
        assert_eq!(post.count, 0, "no such series: zero, not unknown");
        let sync = |n: u64| {
            format!(
                "scorehub_log_sync_seconds_bucket{{le=\"0.005\"}} {n}\n\
                 scorehub_log_sync_seconds_bucket{{le=\"+Inf\"}} {n}\n\
                 scorehub_log_sync_seconds_sum {}\n",
                n as f64 * 0.002
            )
        };
        let log = window(
            Histogram::LogSync,
            &vec![hub("a", sync(3))],
            &vec![hub("a", sync(13))],
        )
        .expect("known");
        assert_eq!(
            (log.count, log.p99_le, log.mean),
            (10, Some(5.0), Some(2.0))
        );

        let failed = vec![hub("a", page(5)), ("b".to_string(), Err("refused".into()))];
        let e = window(Histogram::Fanout, &before, &failed).expect_err("unknown");
        assert!(e.contains("b/metrics: refused"), "{e}");
        assert!(window(Histogram::Fanout, &Vec::new(), &Vec::new()).is_err());
        let (none, note) = super::report(Histogram::Fanout, &before, &failed);
        assert_eq!(none, None);
        assert!(note.is_some_and(|n| n.contains("scorehub_fanout_seconds")));
    }
}
