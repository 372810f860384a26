//! Per-shard rate limiting: token buckets for records and bytes that also back
//! off while Kinesis answers ProvisionedThroughputExceeded.
//!
//! The AWS KPL's limiter ignores throttling answers, so a producer that
//! misjudges a shard's capacity (another producer writes to it too, or the
//! rate limit is set above 100 %) keeps hitting it. Here each throttled answer
//! cuts the shard's rate multiplicatively (at most once per
//! [`THROTTLE_HOLD`]), and the rate climbs back linearly while no throttle is
//! seen: a classic AIMD loop.

use std::time::{Duration, Instant};

/// A shard's write limits: 1,000 records and 1 MiB per second.
pub const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// See [`SHARD_RECORDS_PER_SEC`].
pub const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
/// Factor the rate is multiplied by on a throttle.
const DECREASE: f64 = 0.75;
/// Lowest factor of the configured rate.
const MIN_FACTOR: f64 = 0.1;
/// Increase of the factor per second without a throttle.
const INCREASE_PER_SEC: f64 = 0.05;
/// Throttles closer together than this count as one.
pub const THROTTLE_HOLD: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    rate: f64,
}

/// The limiter of one shard.
#[derive(Debug, Clone)]
pub struct ShardLimiter {
    records: Bucket,
    bytes: Bucket,
    /// Smallest byte capacity, so that one maximal record can always pass.
    min_byte_capacity: f64,
    factor: f64,
    last_refill: Instant,
    last_throttle: Option<Instant>,
}

impl ShardLimiter {
    /// A limiter allowing `rate_limit_percent` of a shard's limits, full at
    /// `now`. `max_record_bytes` is the largest record that must fit through.
    pub fn new(rate_limit_percent: u32, max_record_bytes: usize, now: Instant) -> Self {
        let scale = f64::from(rate_limit_percent.max(1)) / 100.0;
        let records = SHARD_RECORDS_PER_SEC * scale;
        let bytes = SHARD_BYTES_PER_SEC * scale;
        Self {
            records: Bucket {
                tokens: records,
                rate: records,
            },
            bytes: Bucket {
                tokens: bytes,
                rate: bytes,
            },
            min_byte_capacity: max_record_bytes as f64,
            factor: 1.0,
            last_refill: now,
            last_throttle: None,
        }
    }

    /// Lets records of up to `max_record_bytes` through, if that is more
    /// than before (a stream's record limit was raised). Never lowers it: a
    /// record already accepted under the higher limit must still pass.
    pub fn raise_max_record_bytes(&mut self, max_record_bytes: usize) {
        self.min_byte_capacity = self.min_byte_capacity.max(max_record_bytes as f64);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_refill)
            .as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        self.last_refill = now;
        let calm = self
            .last_throttle
            .is_none_or(|at| now.saturating_duration_since(at) > Duration::from_secs(1));
        if calm {
            self.factor = (self.factor + INCREASE_PER_SEC * elapsed).min(1.0);
        }
        // Capacity is one second of the current rate: a short burst at most.
        let records_cap = (self.records.rate * self.factor).max(1.0);
        let bytes_cap = (self.bytes.rate * self.factor).max(self.min_byte_capacity);
        self.records.tokens =
            (self.records.tokens + self.records.rate * self.factor * elapsed).min(records_cap);
        self.bytes.tokens =
            (self.bytes.tokens + self.bytes.rate * self.factor * elapsed).min(bytes_cap);
    }

    /// Takes one record of `bytes` bytes if both buckets allow it now.
    pub fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        let bytes = bytes as f64;
        if self.records.tokens >= 1.0 && self.bytes.tokens >= bytes {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// How long until a record of `bytes` bytes could pass, assuming nothing
    /// else takes tokens meanwhile.
    pub fn wait_time(&self, bytes: usize) -> Duration {
        let rate_records = self.records.rate * self.factor;
        let rate_bytes = self.bytes.rate * self.factor;
        let need_records = (1.0 - self.records.tokens).max(0.0) / rate_records;
        let need_bytes = (bytes as f64 - self.bytes.tokens).max(0.0) / rate_bytes;
        Duration::from_secs_f64(need_records.max(need_bytes).min(1.0)) + Duration::from_millis(1)
    }

    /// The earliest time a record of `bytes` bytes could pass.
    pub fn next_try(&self, bytes: usize) -> Instant {
        self.last_refill + self.wait_time(bytes)
    }

    /// Kinesis throttled a put to this shard: slow down.
    pub fn on_throttle(&mut self, now: Instant) {
        let recent = self
            .last_throttle
            .is_some_and(|at| now.saturating_duration_since(at) < THROTTLE_HOLD);
        if !recent {
            self.refill(now);
            self.factor = (self.factor * DECREASE).max(MIN_FACTOR);
            self.records.tokens = self.records.tokens.min(0.0);
            self.bytes.tokens = self.bytes.tokens.min(0.0);
            self.last_throttle = Some(now);
        }
    }

    /// Current fraction of the configured rate (1.0 when never throttled).
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_second_are_bounded() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(100, 1024, start);
        let mut passed = 0;
        for ms in 0..=2000u64 {
            let now = start + Duration::from_millis(ms);
            while limiter.try_take(10, now) {
                passed += 1;
            }
        }
        // One second of burst plus two seconds of refill.
        assert!((2900..=3010).contains(&passed), "{passed}");
    }

    #[test]
    fn throttles_slow_down_and_calm_speeds_up() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(150, 1024, start);
        limiter.on_throttle(start);
        limiter.on_throttle(start + Duration::from_millis(10));
        assert!(
            (limiter.factor() - 0.75).abs() < 1e-9,
            "second throttle within the hold is ignored"
        );
        limiter.on_throttle(start + Duration::from_secs(1));
        assert!(limiter.factor() < 0.6);
        limiter.try_take(1, start + Duration::from_secs(30));
        assert!((limiter.factor() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_maximal_record_always_fits_eventually() {
        let start = Instant::now();
        let mut limiter = ShardLimiter::new(10, 1 << 20, start);
        let later = start + Duration::from_secs(20);
        assert!(limiter.try_take(1 << 20, later));
    }
}
