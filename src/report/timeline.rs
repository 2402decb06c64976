//! The report's time axis: records by the time they finished (`finished_at`) and the event log's
//! intervals (429s, 5xx, retries, pauses, pace), in at most [`MAX_BUCKETS`] equal buckets.
//!
//! One pass, memory flat: buckets start one second wide and double (pairs merge) whenever the
//! span from the first to the last bucket would need more than [`MAX_BUCKETS`], so a minute's
//! run gets one-second buckets and a week-long one (or a run resumed days later) about
//! 1.4-hour ones. Each bucket holds counts, a latency sketch of its ok rows (made only once the
//! bucket has one) and its cost by model.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::latency_sketch::LatencySketch;
use super::Latency;

/// Buckets a timeline has at most.
pub(crate) const MAX_BUCKETS: i64 = 120;

/// Models drawn apart in the cost chart; the others are summed as `(other models)`.
pub(crate) const MAX_MODELS: usize = 8;

/// The label of the models past [`MAX_MODELS`].
const OTHER_MODELS: &str = "(other models)";

/// The run over time, as `report --json` prints it (`timeline`).
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// When the first bucket starts (RFC 3339, UTC).
    pub start: String,
    /// Width of a bucket, seconds.
    pub bucket_s: f64,
    /// The models of `cost_usd` in each bucket, in this order.
    pub models: Vec<String>,
    pub buckets: Vec<Bucket>,
    /// Records without a readable `finished_at` (written by an older version): counted in the
    /// totals, not on the time axis.
    pub untimed_rows: u64,
}

/// What happened in one bucket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bucket {
    /// Seconds from the timeline's start to this bucket's start.
    pub t_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Latency of the ok rows that finished in the bucket.
    pub latency_ms: Option<Latency>,
    /// Cost of the records that finished in the bucket, by model (`Timeline::models`), real
    /// and simulated together.
    pub cost_usd: Vec<f64>,
    /// From the event log: 429 answers, 5xx answers, retries, and seconds of the bucket the
    /// pool was paused (from its `pause` lines: each pause spread over the buckets it spans).
    pub rate_limited: u64,
    pub server_errors: u64,
    pub retries: u64,
    pub paused_s: f64,
    /// From the event log: the pace in force at the bucket's end (requests per minute): its
    /// last interval's, else the one before it; null when not paced.
    pub pace_rpm: Option<f64>,
    /// From the event log: the server's request limit as the run knew it at the bucket's last
    /// interval (requests per minute); null while unknown.
    pub limit_rpm: Option<f64>,
}

/// One bucket while the file is read.
#[derive(Default)]
struct Acc {
    ok: u64,
    errors: u64,
    latency: Option<Box<LatencySketch>>,
    cost: Vec<f64>,
    rate_limited: u64,
    server_errors: u64,
    retries: u64,
    paused_s: f64,
    /// (when, rpm) of the latest interval with a pace.
    pace: Option<(i64, f64)>,
    /// (when, rpm) of the latest interval with a known server limit.
    limit: Option<(i64, f64)>,
}

impl Acc {
    fn merge(&mut self, other: Acc) {
        self.ok += other.ok;
        self.errors += other.errors;
        match (&mut self.latency, other.latency) {
            (Some(mine), Some(theirs)) => mine.merge(&theirs),
            (mine @ None, theirs) => *mine = theirs,
            _ => {}
        }
        if self.cost.len() < other.cost.len() {
            self.cost.resize(other.cost.len(), 0.0);
        }
        for (mine, theirs) in self.cost.iter_mut().zip(other.cost) {
            *mine += theirs;
        }
        self.rate_limited += other.rate_limited;
        self.server_errors += other.server_errors;
        self.retries += other.retries;
        self.paused_s += other.paused_s;
        self.pace = latest(self.pace, other.pace);
        self.limit = latest(self.limit, other.limit);
    }
}

/// The later of two timed values.
fn latest(a: Option<(i64, f64)>, b: Option<(i64, f64)>) -> Option<(i64, f64)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// What the event log's `interval` line says.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Interval {
    pub rate_limited: u64,
    pub server_errors: u64,
    pub retries: u64,
    pub pace_rpm: Option<f64>,
    pub limit_rpm: Option<f64>,
}

/// Builds a [`Timeline`] in one pass.
#[derive(Default)]
pub(crate) struct TimelineBuilder {
    /// The first time seen, ms since the epoch: bucket keys count from it.
    origin_ms: Option<i64>,
    /// Bucket width, ms (0 until the first time is seen).
    width_ms: i64,
    buckets: BTreeMap<i64, Acc>,
    models: Vec<String>,
    untimed: u64,
    /// The end of the last pause added (ms), so a pause extended by a later line counts once.
    paused_until_ms: i64,
    /// The run's stops (ms), where the pace stops being carried forward.
    stops_ms: Vec<i64>,
}

impl TimelineBuilder {
    /// A record that finished at `finished_at` (RFC 3339); one without a readable time is
    /// counted apart.
    pub(crate) fn add_record(
        &mut self,
        finished_at: Option<&str>,
        ok: bool,
        latency_ms: u64,
        model: &str,
        cost: f64,
    ) {
        let Some(at) = finished_at.and_then(epoch_ms) else {
            self.untimed += 1;
            return;
        };
        let model = self.model_index(model);
        let bucket = self.bucket_at(at);
        if ok {
            bucket.ok += 1;
            bucket
                .latency
                .get_or_insert_with(Box::default)
                .add(u32::try_from(latency_ms).unwrap_or(u32::MAX));
        } else {
            bucket.errors += 1;
        }
        if bucket.cost.len() <= model {
            bucket.cost.resize(model + 1, 0.0);
        }
        bucket.cost[model] += cost;
    }

    /// An `interval` line of the event log, written at `at` (RFC 3339).
    pub(crate) fn add_interval(&mut self, at: &str, interval: Interval) {
        let Some(at_ms) = epoch_ms(at) else {
            return;
        };
        let bucket = self.bucket_at(at_ms);
        bucket.rate_limited += interval.rate_limited;
        bucket.server_errors += interval.server_errors;
        bucket.retries += interval.retries;
        let stamped = |rpm: Option<f64>| rpm.map(|rpm| (at_ms, rpm));
        bucket.pace = latest(bucket.pace, stamped(interval.pace_rpm));
        bucket.limit = latest(bucket.limit, stamped(interval.limit_rpm));
    }

    /// A `pause` line: the pool paused at `at` until `until` (both RFC 3339).
    pub(crate) fn add_pause(&mut self, at: &str, until: &str) {
        let (Some(from), Some(to)) = (epoch_ms(at), epoch_ms(until)) else {
            return;
        };
        let from = from.max(self.paused_until_ms);
        if to <= from {
            return;
        }
        self.paused_until_ms = to;
        // Both ends first, so the width is final before the pause is spread.
        self.bucket_at(from);
        self.bucket_at(to);
        let origin = self.origin_ms.unwrap_or(from);
        let mut t = from;
        while t < to {
            let key = (t - origin).div_euclid(self.width_ms);
            let end = (origin + (key + 1) * self.width_ms).min(to);
            self.buckets.entry(key).or_default().paused_s += (end - t) as f64 / 1000.0;
            t = end;
        }
    }

    /// A `stop` line at `at`: the pace is not carried past it.
    pub(crate) fn add_stop(&mut self, at: &str) {
        if let Some(at) = epoch_ms(at) {
            self.stops_ms.push(at);
        }
    }

    fn model_index(&mut self, model: &str) -> usize {
        if let Some(i) = self.models.iter().position(|m| m == model) {
            return i;
        }
        if self.models.len() < MAX_MODELS {
            self.models.push(model.to_string());
            return self.models.len() - 1;
        }
        if self.models.len() == MAX_MODELS {
            self.models.push(OTHER_MODELS.to_string());
        }
        MAX_MODELS
    }

    /// The bucket of time `at_ms`, widening the buckets first if it lies too far out.
    fn bucket_at(&mut self, at_ms: i64) -> &mut Acc {
        // Buckets start on whole seconds.
        let origin = *self.origin_ms.get_or_insert(at_ms.div_euclid(1000) * 1000);
        if self.width_ms == 0 {
            self.width_ms = 1000;
        }
        let mut key = (at_ms - origin).div_euclid(self.width_ms);
        while self.span_with(key) > MAX_BUCKETS {
            self.widen();
            key = (at_ms - origin).div_euclid(self.width_ms);
        }
        self.buckets.entry(key).or_default()
    }

    /// How many buckets the timeline would span with a bucket at `key`.
    fn span_with(&self, key: i64) -> i64 {
        let first = self.buckets.keys().next().copied().unwrap_or(key).min(key);
        let last = self
            .buckets
            .keys()
            .next_back()
            .copied()
            .unwrap_or(key)
            .max(key);
        last - first + 1
    }

    /// Doubles the bucket width: each pair of buckets becomes one.
    fn widen(&mut self) {
        self.width_ms *= 2;
        let old = std::mem::take(&mut self.buckets);
        for (key, acc) in old {
            self.buckets
                .entry(key.div_euclid(2))
                .or_default()
                .merge(acc);
        }
    }

    /// The timeline; `None` when no record has a time.
    pub(crate) fn finish(self) -> Option<Timeline> {
        let origin = self.origin_ms?;
        let first = *self.buckets.keys().next()?;
        let last = *self.buckets.keys().next_back()?;
        let models = self.models.len();
        let mut buckets = self.buckets;
        let start_ms = origin + first * self.width_ms;
        let width = self.width_ms;
        let stops: Vec<i64> = self
            .stops_ms
            .iter()
            .map(|at| (at - origin).div_euclid(width))
            .collect();
        let mut pace_in_force = None;
        let out = (first..=last)
            .map(|key| {
                let acc = buckets.remove(&key).unwrap_or_default();
                let mut cost: Vec<f64> = acc.cost.iter().map(|c| (c * 1e9).round() / 1e9).collect();
                cost.resize(models, 0.0);
                Bucket {
                    t_s: ((key - first) * self.width_ms) as f64 / 1000.0,
                    ok: acc.ok,
                    errors: acc.errors,
                    latency_ms: acc.latency.as_deref().and_then(super::latency),
                    cost_usd: cost,
                    rate_limited: acc.rate_limited,
                    server_errors: acc.server_errors,
                    retries: acc.retries,
                    paused_s: (acc.paused_s * 1000.0).round() / 1000.0,
                    pace_rpm: {
                        if let Some((_, rpm)) = acc.pace {
                            pace_in_force = Some(rpm);
                        }
                        let pace = pace_in_force;
                        if stops.contains(&key) {
                            pace_in_force = None;
                        }
                        pace
                    },
                    limit_rpm: acc.limit.map(|(_, rpm)| rpm),
                }
            })
            .collect();
        Some(Timeline {
            start: crate::output::record::timestamp(
                UNIX_EPOCH + Duration::from_millis(start_ms.max(0) as u64),
            ),
            bucket_s: self.width_ms as f64 / 1000.0,
            models: self.models,
            buckets: out,
            untimed_rows: self.untimed,
        })
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn epoch_ms(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    let ms = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> String {
        crate::output::record::timestamp(UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds))
    }

    #[test]
    fn a_short_run_gets_one_second_buckets_and_every_row_is_counted_once() {
        let mut timeline = TimelineBuilder::default();
        for s in 0..30 {
            timeline.add_record(Some(&at(s)), s % 10 != 0, 100 + s, "m", 0.5);
        }
        timeline.add_record(None, true, 1, "m", 0.0);
        let t = timeline.finish().unwrap();
        assert_eq!((t.bucket_s, t.buckets.len(), t.untimed_rows), (1.0, 30, 1));
        assert_eq!(t.buckets.iter().map(|b| b.ok).sum::<u64>(), 27);
        assert_eq!(t.buckets.iter().map(|b| b.errors).sum::<u64>(), 3);
        assert_eq!(t.buckets[5].latency_ms.as_ref().unwrap().p50, 105);
        assert_eq!(t.start, at(0));
    }

    #[test]
    fn a_week_and_rows_out_of_order_stay_within_the_bound_and_lose_nothing() {
        let mut timeline = TimelineBuilder::default();
        let week = 7 * 24 * 3600;
        for i in 0..10_000u64 {
            // Out of order: the first record is not the earliest.
            let s = (i * 7919) % week;
            timeline.add_record(
                Some(&at(s)),
                true,
                10,
                if i % 3 == 0 { "a" } else { "b" },
                1.0,
            );
        }
        timeline.add_interval(
            &at(60),
            Interval {
                rate_limited: 4,
                pace_rpm: Some(600.0),
                ..Interval::default()
            },
        );
        timeline.add_pause(&at(100), &at(400));
        timeline.add_pause(&at(200), &at(500));
        let t = timeline.finish().unwrap();
        assert!(t.buckets.len() as i64 <= MAX_BUCKETS, "{}", t.buckets.len());
        assert_eq!(t.buckets.iter().map(|b| b.ok).sum::<u64>(), 10_000);
        let cost: f64 = t.buckets.iter().flat_map(|b| &b.cost_usd).sum();
        assert_eq!(cost, 10_000.0);
        assert_eq!(t.buckets.iter().map(|b| b.rate_limited).sum::<u64>(), 4);
        // Two overlapping pause lines (an extended pause) count 400 s, once.
        assert_eq!(t.buckets.iter().map(|b| b.paused_s).sum::<f64>(), 400.0);
        assert_eq!(t.models, ["a", "b"]);
        assert!(t.bucket_s >= week as f64 / MAX_BUCKETS as f64);
    }

    #[test]
    fn models_past_the_limit_are_summed_as_other() {
        let mut timeline = TimelineBuilder::default();
        for m in 0..12 {
            timeline.add_record(Some(&at(0)), true, 1, &format!("m{m}"), 1.0);
        }
        let t = timeline.finish().unwrap();
        assert_eq!(t.models.len(), MAX_MODELS + 1);
        assert_eq!(t.models[MAX_MODELS], OTHER_MODELS);
        assert_eq!(t.buckets[0].cost_usd[MAX_MODELS], 4.0);
    }
}
