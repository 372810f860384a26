//! The core's state machine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use foldhash::HashMap;
use tokio::sync::oneshot;

use crate::aggregation::AggregateBuilder;
use crate::config::ProducerConfig;
use crate::error::{MAX_ERROR_MESSAGE, RecordError, elide_middle};
use crate::hash_key::HashKeyCache;
use crate::limiter::ShardLimiter;
use crate::limits::StreamLimits;
use crate::metrics as m;
use crate::record::{Attempt, AttemptError, UserRecordResult};
use crate::shard_map::ShardMap;

use super::collector::{Collector, collect, drain_collector};
use super::shard::{ShardState, flush_aggregator};
use super::types::{Entry, EntryOutcome, Pending, Request, RequestOutcome, single_entry};

/// Entry-level error codes that retrying cannot fix.
const PERMANENT_ENTRY_ERRORS: &[&str] = &[
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    "AccessDeniedException",
];
const THROTTLED: &str = "ProvisionedThroughputExceededException";
/// The attempt error of a user record put again because its aggregate was
/// stored where the Java KCL would drop it (see [`Core::verify`]).
pub(crate) const WRONG_SHARD_AGGREGATE: &str = "AggregateOutsideShardRange";
/// Partition key hashes remembered: 4,096 slots, about 200 KiB with typical
/// short keys (at most 1 MiB with 256-byte keys); larger tables miss the CPU
/// caches and cost as much as the MD5 they save.
const HASH_KEY_CACHE_SLOTS: usize = 4_096;

#[derive(Debug)]
struct StreamState {
    name: Arc<str>,
    map: Option<Arc<ShardMap>>,
    shards: HashMap<Arc<str>, ShardState>,
    collector: Collector,
    /// As last read from DescribeStreamSummary; the default (1 MiB records,
    /// 5 MiB requests) until then.
    limits: StreamLimits,
    /// The map should be (re)loaded.
    map_wanted: bool,
    /// Records that arrived before the first map: they wait for it, but no
    /// longer than their buffering deadline, then go alone.
    unmapped: Vec<Pending>,
    unmapped_deadline: Option<Instant>,
}

/// The sans-I/O producer core.
#[derive(Debug)]
pub(crate) struct Core {
    config: Arc<ProducerConfig>,
    streams: HashMap<Arc<str>, StreamState>,
    /// Records waiting out their retry backoff, by due time.
    retries: BTreeMap<(Instant, u64), Pending>,
    retry_seq: u64,
    ready: VecDeque<Request>,
    /// Outstanding records per flush epoch, and `flush_all` waiters.
    /// `(epoch, outstanding)`, oldest first; the current epoch is at the back.
    epochs: VecDeque<(u64, usize)>,
    epoch: u64,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    outstanding: usize,
    flushing: bool,
    collection_delay: Duration,
    hash_keys: HashKeyCache,
    /// Aggregates stored in a shard other than the predicted one, held until
    /// a fresh shard map says whether that shard's range covers them all.
    unverified: Vec<Unverified>,
}

/// An aggregate stored on a stale shard map (see [`Core::verify`]).
#[derive(Debug)]
struct Unverified {
    stream: Arc<str>,
    shard_id: String,
    sequence_number: String,
    pendings: Vec<Pending>,
    started: Instant,
    duration: Duration,
}

impl Core {
    pub fn new(config: Arc<ProducerConfig>) -> Self {
        let collection_delay = (config.record_max_buffered_time / 5).min(Duration::from_millis(50));
        Self {
            config,
            streams: HashMap::default(),
            retries: BTreeMap::new(),
            retry_seq: 0,
            ready: VecDeque::new(),
            epochs: VecDeque::new(),
            epoch: 0,
            flush_waiters: Vec::new(),
            outstanding: 0,
            flushing: false,
            collection_delay,
            hash_keys: HashKeyCache::new(HASH_KEY_CACHE_SLOTS),
            unverified: Vec::new(),
        }
    }

    /// Records accepted and not completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Registers a stream ahead of its first record, so that its shard map is
    /// loaded before records arrive.
    pub fn preload(&mut self, stream: &str) {
        if !self.streams.contains_key(stream) {
            Self::new_stream(&mut self.streams, stream);
        }
    }

    fn new_stream<'a>(
        streams: &'a mut HashMap<Arc<str>, StreamState>,
        stream: &str,
    ) -> &'a mut StreamState {
        let name: Arc<str> = Arc::from(stream);
        streams.entry(name.clone()).or_insert(StreamState {
            name,
            map: None,
            shards: HashMap::default(),
            collector: Collector::default(),
            limits: StreamLimits::default(),
            map_wanted: true,
            unmapped: Vec::new(),
            unmapped_deadline: None,
        })
    }

    /// Streams whose shard map should be loaded now.
    pub fn wanted_maps(&mut self) -> Vec<Arc<str>> {
        self.streams
            .values_mut()
            .filter_map(|s| std::mem::take(&mut s.map_wanted).then(|| s.name.clone()))
            .collect()
    }

    /// Names of every stream seen so far.
    pub fn stream_names(&self) -> Vec<Arc<str>> {
        self.streams.keys().cloned().collect()
    }

    /// Installs a stream's size limits as read from DescribeStreamSummary:
    /// aggregates and requests built from now on are held to them.
    pub fn set_stream_limits(&mut self, stream: &str, limits: StreamLimits) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        state.limits = limits;
        for shard in state.shards.values_mut() {
            shard
                .limiter
                .raise_max_record_bytes(limits.max_record_size());
        }
    }

    /// Installs a freshly loaded shard map. Records buffered for shards that
    /// are no longer open are re-routed.
    pub fn set_shard_map(&mut self, stream: &str, map: ShardMap, now: Instant) {
        let Some(state) = self.streams.get_mut(stream) else {
            return;
        };
        if state.map.as_deref() == Some(&map) {
            self.verify(stream, now);
            return;
        }
        let mut reroute = Vec::new();
        state.shards.retain(|id, shard| {
            if map.contains(id) {
                return true;
            }
            shard.aggregator.take();
            reroute.append(&mut shard.pendings);
            for entry in shard.queue.drain(..) {
                reroute.extend(entry.pendings);
            }
            false
        });
        state.map = Some(Arc::new(map));
        state.unmapped_deadline = None;
        reroute.append(&mut state.unmapped);
        for pending in reroute {
            self.route(pending, now);
        }
        self.verify(stream, now);
    }

    /// An aggregate held for verification whose first record's time to live
    /// runs out before a fresh map came (ListShards keeps failing) completes
    /// as stored: it is in Kinesis, though perhaps where the Java KCL drops it.
    fn settle_unverified_past_ttl(&mut self, now: Instant) {
        if self.unverified.is_empty() {
            return;
        }
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unverified)
            .into_iter()
            .partition(|u| u.pendings.iter().any(|p| p.expires <= now));
        self.unverified = held;
        for held in due {
            tracing::warn!(
                stream = %held.stream,
                shard = %held.shard_id,
                sequence_number = %held.sequence_number,
                "an aggregate stored on a stale shard map could not be checked against a fresh one \
                 before its records' time to live; completed as stored"
            );
            self.succeed(
                held.pendings,
                true,
                &held.sequence_number,
                &held.shard_id,
                held.started,
                held.duration,
            );
        }
    }

    /// Settles the aggregates of `stream` that were stored in a shard other
    /// than the predicted one, now that its map is fresh.
    ///
    /// Such an aggregate was built on a stale map (the stream was resharded
    /// while it was buffered) and stored in the shard its first record's hash
    /// key falls in. If the shard's range covers all its records, they are
    /// stored. If not, the Java KCL (`AggregatorUtil`, with the shard's range)
    /// and every consumer built on it drop the whole aggregate, silently: its
    /// records are put again, on the fresh map. Consumers that keep
    /// out-of-range records (ours) then see those records twice — a
    /// duplicate instead of a loss, once per reshard.
    fn verify(&mut self, stream: &str, now: Instant) {
        let Some(map) = self.streams.get(stream).and_then(|s| s.map.clone()) else {
            return;
        };
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unverified)
            .into_iter()
            .partition(|u| &*u.stream == stream);
        self.unverified = others;
        for held in mine {
            // A map listed before the reshard (a load already in flight when
            // the aggregate came back) does not know the shard it landed
            // in: it cannot tell; keep it and ask for a newer map.
            if !map.contains(&held.shard_id) {
                if let Some(state) = self.streams.get_mut(stream) {
                    state.map_wanted = true;
                }
                self.unverified.push(held);
                continue;
            }
            let covered = held.pendings.iter().all(|pending| {
                map.shard_for(pending.hash_key)
                    .is_some_and(|index| **map.shard_id(index) == *held.shard_id)
            });
            if covered {
                self.succeed(
                    held.pendings,
                    true,
                    &held.sequence_number,
                    &held.shard_id,
                    held.started,
                    held.duration,
                );
                continue;
            }
            metrics::counter!(m::AGGREGATES_PUT_AGAIN).increment(1);
            let message = format!(
                "aggregate {} was stored in {} on a stale shard map and holds records outside \
                 that shard's hash key range (the Java KCL drops such an aggregate whole): \
                 put again",
                held.sequence_number, held.shard_id
            );
            for mut pending in held.pendings {
                pending.attempts.push(Attempt {
                    delay: held.started.saturating_duration_since(pending.since),
                    duration: held.duration,
                    error: Some(AttemptError {
                        code: WRONG_SHARD_AGGREGATE.to_owned(),
                        message: message.clone(),
                    }),
                });
                pending.since = now;
                metrics::counter!(m::RETRIES).increment(1);
                self.route(pending, now);
            }
        }
    }

    /// Accepts a user record.
    pub fn add(&mut self, mut pending: Pending) {
        pending.hash_key = match pending.record.explicit_hash_key() {
            Some(explicit) => explicit,
            None => self.hash_keys.hash(pending.record.partition_key()),
        };
        pending.epoch = self.epoch;
        match self.epochs.back_mut() {
            Some((epoch, count)) if *epoch == self.epoch => *count += 1,
            _ => self.epochs.push_back((self.epoch, 1)),
        }
        self.outstanding += 1;
        let now = pending.arrival;
        self.route(pending, now);
    }

    /// Puts a record into the aggregator of its predicted shard (or, without
    /// a shard map or with aggregation off, straight on its way alone).
    fn route(&mut self, pending: Pending, now: Instant) {
        let config = &*self.config;
        let state = match self.streams.get_mut(pending.record.stream()) {
            Some(state) => state,
            None => Self::new_stream(&mut self.streams, pending.record.stream()),
        };
        let shard_index = state
            .map
            .as_ref()
            .and_then(|map| map.shard_for(pending.hash_key));
        if state.map.is_none() && config.aggregation_enabled {
            // Wait for the first map within the buffering time the record
            // would spend in an aggregator anyway.
            let deadline = (pending.arrival + config.record_max_buffered_time).min(pending.expires);
            state.unmapped_deadline = Some(
                state
                    .unmapped_deadline
                    .map_or(deadline, |d| d.min(deadline)),
            );
            state.unmapped.push(pending);
            return;
        }
        let (Some(index), Some(map)) = (shard_index, state.map.as_ref()) else {
            // No map (or a hash key in a gap of a stale one): send alone
            // rather than wait; Kinesis routes it by its own keys.
            state.map_wanted |= state.map.is_some();
            let entry = single_entry(pending, None);
            collect(
                &mut state.collector,
                entry,
                now,
                self.collection_delay,
                config,
            );
            drain_collector(
                &mut state.collector,
                &state.name,
                max_request_size(config, state.limits),
                config,
                false,
                &mut self.ready,
            );
            return;
        };
        // Look up by &str: no reference count traffic per record.
        let shard_id = map.shard_id(index);
        if !state.shards.contains_key(&**shard_id) {
            state.shards.insert(
                shard_id.clone(),
                ShardState {
                    id: shard_id.clone(),
                    aggregator: AggregateBuilder::new(),
                    pendings: Vec::new(),
                    deadline: None,
                    queue: VecDeque::new(),
                    limiter: ShardLimiter::new(
                        config.rate_limit,
                        state.limits.max_record_size(),
                        now,
                    ),
                },
            );
        }
        let Some(shard) = state.shards.get_mut(&**shard_id) else {
            return;
        };
        if !config.aggregation_enabled {
            let entry = single_entry(pending, Some(shard.id.clone()));
            shard.queue.push_back(entry);
            return;
        }
        let record = &pending.record;
        let outer_key = shard
            .aggregator
            .partition_key()
            .unwrap_or(record.partition_key());
        let max_size = max_aggregate_size(config, state.limits, outer_key);
        let fits = shard.aggregator.len() < config.aggregation_max_count
            && shard.aggregator.try_add(
                record.partition_key(),
                record.explicit_hash_key(),
                record.data(),
                max_size,
            );
        if !fits {
            flush_aggregator(shard);
            shard.aggregator.add(
                record.partition_key(),
                record.explicit_hash_key(),
                record.data(),
            );
        }
        let deadline = (pending.arrival + config.record_max_buffered_time).min(pending.expires);
        shard.deadline = Some(shard.deadline.map_or(deadline, |d| d.min(deadline)));
        shard.pendings.push(pending);
        // A full aggregate goes at once.
        let outer_key = shard.aggregator.partition_key().unwrap_or_default();
        if shard.aggregator.len() >= config.aggregation_max_count
            || shard.aggregator.encoded_len() >= max_aggregate_size(config, state.limits, outer_key)
        {
            flush_aggregator(shard);
        }
    }

    /// Sends everything buffered as soon as the rate limiters allow.
    pub fn flush(&mut self, now: Instant) {
        self.flushing = true;
        self.poll(now);
        self.flushing = false;
    }

    /// Registers a waiter that resolves when every record accepted so far has
    /// completed, and flushes.
    pub fn flush_all(&mut self, waiter: oneshot::Sender<()>, now: Instant) {
        let boundary = self.epoch + 1;
        self.epoch = boundary;
        self.flush_waiters.push((boundary, waiter));
        self.flush(now);
        self.wake_flush_waiters();
    }

    /// Moves everything whose time has come one stage on: due retries back
    /// into aggregators, due aggregates into shard queues, shard queues
    /// through their limiters into collectors, due collectors into requests.
    pub fn poll(&mut self, now: Instant) {
        self.settle_unverified_past_ttl(now);
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let pending = entry.remove();
            if pending.expires <= now {
                self.expire(pending, now);
            } else {
                self.route(pending, now);
            }
        }
        let config = self.config.clone();
        let flushing = self.flushing;
        let mut expired = Vec::new();
        let mut reroute = Vec::new();
        for state in self.streams.values_mut() {
            if state
                .unmapped_deadline
                .is_some_and(|d| d <= now || flushing)
            {
                state.unmapped_deadline = None;
                for pending in std::mem::take(&mut state.unmapped) {
                    let entry = single_entry(pending, None);
                    collect(
                        &mut state.collector,
                        entry,
                        now,
                        self.collection_delay,
                        &config,
                    );
                }
            }
            for shard in state.shards.values_mut() {
                if shard.deadline.is_some_and(|d| d <= now || flushing) {
                    flush_aggregator(shard);
                }
                while let Some(entry) = shard.queue.front() {
                    if entry.earliest_expiry().is_some_and(|e| e <= now) {
                        // Split: expired records fail, the rest are re-aggregated.
                        let Some(entry) = shard.queue.pop_front() else {
                            break;
                        };
                        for pending in entry.pendings {
                            if pending.expires <= now {
                                expired.push(pending);
                            } else {
                                reroute.push(pending);
                            }
                        }
                        continue;
                    }
                    if !shard.limiter.try_take(entry.size(), now) {
                        break;
                    }
                    let Some(entry) = shard.queue.pop_front() else {
                        break;
                    };
                    collect(
                        &mut state.collector,
                        entry,
                        now,
                        self.collection_delay,
                        &config,
                    );
                    drain_collector(
                        &mut state.collector,
                        &state.name,
                        max_request_size(&config, state.limits),
                        &config,
                        false,
                        &mut self.ready,
                    );
                }
            }
            let collector = &mut state.collector;
            let due = collector.deadline.is_some_and(|d| d <= now) || collector.triggered;
            drain_collector(
                collector,
                &state.name,
                max_request_size(&config, state.limits),
                &config,
                due || flushing,
                &mut self.ready,
            );
        }
        for pending in expired {
            self.expire(pending, now);
        }
        for pending in reroute {
            self.route(pending, now);
        }
    }

    /// The next time [`poll`](Self::poll) has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.retries.keys().next().map(|(at, _)| *at);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for held in &self.unverified {
            if let Some(expires) = held.pendings.iter().map(|p| p.expires).min() {
                consider(expires);
            }
        }
        for state in self.streams.values() {
            for deadline in [state.collector.deadline, state.unmapped_deadline]
                .into_iter()
                .flatten()
            {
                consider(deadline);
            }
            for shard in state.shards.values() {
                if let Some(d) = shard.deadline {
                    consider(d);
                }
                if let Some(entry) = shard.queue.front() {
                    consider(shard.limiter.next_try(entry.size()));
                    if let Some(e) = entry.earliest_expiry() {
                        consider(e);
                    }
                }
            }
        }
        next
    }

    /// The next request to send, if any.
    pub fn take_request(&mut self) -> Option<Request> {
        self.ready.pop_front()
    }

    /// Applies the outcome of a request.
    pub fn on_response(&mut self, request: Request, outcome: RequestOutcome, now: Instant) {
        let started = request.started.unwrap_or(now);
        let duration = now.saturating_duration_since(started);
        let stream = request.stream;
        match outcome {
            RequestOutcome::Entries(results) if results.len() == request.entries.len() => {
                for (entry, result) in request.entries.into_iter().zip(results) {
                    match result {
                        EntryOutcome::Put {
                            sequence_number,
                            shard_id,
                        } => self.on_put(
                            &stream,
                            entry,
                            &sequence_number,
                            &shard_id,
                            started,
                            duration,
                        ),
                        EntryOutcome::Failed { code, message } => {
                            let retryable = !PERMANENT_ENTRY_ERRORS.contains(&code.as_str());
                            self.on_failure(
                                &stream, entry, code, message, retryable, started, duration, now,
                            );
                        }
                    }
                }
            }
            RequestOutcome::Entries(results) => {
                let message = format!(
                    "{} results for {} records",
                    results.len(),
                    request.entries.len()
                );
                for entry in request.entries {
                    self.on_failure(
                        &stream,
                        entry,
                        "InvalidResponse".into(),
                        message.clone(),
                        true,
                        started,
                        duration,
                        now,
                    );
                }
            }
            RequestOutcome::Failed {
                code,
                message,
                retryable,
            } => {
                for entry in request.entries {
                    self.on_failure(
                        &stream,
                        entry,
                        code.clone(),
                        message.clone(),
                        retryable,
                        started,
                        duration,
                        now,
                    );
                }
            }
        }
        self.wake_flush_waiters();
    }

    fn on_put(
        &mut self,
        stream: &str,
        entry: Entry,
        sequence_number: &str,
        shard_id: &str,
        started: Instant,
        duration: Duration,
    ) {
        metrics::counter!(m::KINESIS_RECORDS_PUT).increment(1);
        if let Some(predicted) = &entry.shard
            && &**predicted != shard_id
        {
            // The map is stale (the stream was resharded): reload it. A single
            // record is stored, so it succeeded; an aggregate waits for the
            // fresh map to tell whether the shard covers all its records.
            metrics::counter!(m::WRONG_SHARD).increment(1);
            if let Some(state) = self.streams.get_mut(stream) {
                state.map_wanted = true;
                if entry.aggregated && entry.pendings.len() > 1 {
                    self.unverified.push(Unverified {
                        stream: state.name.clone(),
                        shard_id: shard_id.to_owned(),
                        sequence_number: sequence_number.to_owned(),
                        pendings: entry.pendings,
                        started,
                        duration,
                    });
                    return;
                }
            }
        }
        self.succeed(
            entry.pendings,
            entry.aggregated,
            sequence_number,
            shard_id,
            started,
            duration,
        );
    }

    /// Completes the user records of a stored Kinesis record.
    fn succeed(
        &mut self,
        pendings: Vec<Pending>,
        aggregated: bool,
        sequence_number: &str,
        shard_id: &str,
        started: Instant,
        duration: Duration,
    ) {
        for (index, mut pending) in pendings.into_iter().enumerate() {
            pending.attempts.push(Attempt {
                delay: started.saturating_duration_since(pending.since),
                duration,
                error: None,
            });
            let result = UserRecordResult {
                sequence_number: sequence_number.to_owned(),
                sub_sequence_number: if aggregated { index as u64 } else { 0 },
                shard_id: shard_id.to_owned(),
                attempts: std::mem::take(&mut pending.attempts),
            };
            metrics::counter!(m::USER_RECORDS_PUT).increment(1);
            metrics::histogram!(m::BUFFERING_TIME)
                .record(started.saturating_duration_since(pending.arrival));
            self.complete(pending, Ok(result));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_failure(
        &mut self,
        stream: &str,
        entry: Entry,
        code: String,
        message: String,
        retryable: bool,
        started: Instant,
        duration: Duration,
        now: Instant,
    ) {
        if code == THROTTLED {
            metrics::counter!(m::THROTTLES).increment(1);
            if let (Some(shard), Some(state)) = (&entry.shard, self.streams.get_mut(stream))
                && let Some(shard) = state.shards.get_mut(shard)
            {
                shard.limiter.on_throttle(now);
            }
        }
        // Every record of the entry keeps a copy: keep it short, and keep its
        // end, where services say what failed.
        let message = match elide_middle(&message, MAX_ERROR_MESSAGE) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(short) => short,
        };
        for mut pending in entry.pendings {
            pending.attempts.push(Attempt {
                delay: started.saturating_duration_since(pending.since),
                duration,
                error: Some(AttemptError {
                    code: code.clone(),
                    message: message.clone(),
                }),
            });
            pending.since = now;
            if !retryable {
                metrics::counter!(m::USER_RECORDS_FAILED).increment(1);
                let error = RecordError::Failed {
                    record: Box::new(pending.record.clone()),
                    code: code.clone(),
                    message: message.clone(),
                    attempts: std::mem::take(&mut pending.attempts),
                };
                self.complete(pending, Err(error));
            } else if pending.expires <= now {
                self.expire(pending, now);
            } else {
                metrics::counter!(m::RETRIES).increment(1);
                let due = (now + self.backoff(pending.attempts.len())).min(pending.expires);
                self.retry_seq += 1;
                self.retries.insert((due, self.retry_seq), pending);
            }
        }
    }

    fn backoff(&self, attempts: usize) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1))
            .unwrap_or(self.config.retry_max_delay)
    }

    fn expire(&mut self, mut pending: Pending, _now: Instant) {
        metrics::counter!(m::USER_RECORDS_EXPIRED).increment(1);
        let error = RecordError::Expired {
            record: Box::new(pending.record.clone()),
            attempts: std::mem::take(&mut pending.attempts),
        };
        self.complete(pending, Err(error));
    }

    fn complete(&mut self, mut pending: Pending, result: Result<UserRecordResult, RecordError>) {
        if let Some(reply) = pending.reply.take() {
            let _ = reply.send(result);
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Some(index) = self
            .epochs
            .iter()
            .position(|(epoch, _)| *epoch == pending.epoch)
            && let Some((_, count)) = self.epochs.get_mut(index)
        {
            *count -= 1;
            if *count == 0 {
                self.epochs.remove(index);
            }
        }
        // Dropping `pending` releases its backpressure permits.
    }

    fn wake_flush_waiters(&mut self) {
        // A waiter with boundary `b` is done when no record of an epoch
        // before `b` is outstanding.
        let oldest = self.epochs.front().map_or(u64::MAX, |(epoch, _)| *epoch);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flush_waiters)
            .into_iter()
            .partition(|(boundary, _)| *boundary <= oldest);
        self.flush_waiters = waiting;
        for (_, waiter) in done {
            let _ = waiter.send(());
        }
    }

    /// Fails every record still held (used when the driver stops abnormally).
    pub fn abandon(&mut self) {
        // Stored, though perhaps where the Java KCL drops them: as stored.
        for held in std::mem::take(&mut self.unverified) {
            self.succeed(
                held.pendings,
                true,
                &held.sequence_number,
                &held.shard_id,
                held.started,
                held.duration,
            );
        }
        let mut all = Vec::new();
        all.extend(std::mem::take(&mut self.retries).into_values());
        for request in std::mem::take(&mut self.ready) {
            for entry in request.entries {
                all.extend(entry.pendings);
            }
        }
        for state in self.streams.values_mut() {
            for shard in state.shards.values_mut() {
                shard.aggregator.take();
                all.append(&mut shard.pendings);
                for entry in shard.queue.drain(..) {
                    all.extend(entry.pendings);
                }
            }
            for entry in state.collector.entries.drain(..) {
                all.extend(entry.pendings);
            }
            all.append(&mut state.unmapped);
        }
        for pending in all {
            let record = Some(Box::new(pending.record.clone()));
            self.complete(pending, Err(RecordError::ProducerStopped { record }));
        }
    }
}

/// Most bytes of an aggregate whose outer partition key is `outer_key`:
/// `aggregation_max_size`, and never so much that the aggregate plus that key
/// (what Kinesis counts) exceeds the stream's record limit.
fn max_aggregate_size(config: &ProducerConfig, limits: StreamLimits, outer_key: &str) -> usize {
    config
        .aggregation_max_size
        .min(limits.max_record_size().saturating_sub(outer_key.len()))
}

/// Most bytes (data plus partition keys) of one PutRecords request to the
/// stream: `collection_max_size`, within the stream's request limit.
fn max_request_size(config: &ProducerConfig, limits: StreamLimits) -> usize {
    config.collection_max_size.min(limits.max_request_size())
}
