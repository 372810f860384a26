//! The producer's hot path without the network, for the benchmark in
//! `kpl/benches/hot_path.rs`. Not a stable API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::ProducerConfig;
use crate::pipeline::{Core, Pending};
use crate::record::UserRecord;
use crate::shard_map::{ShardMap, ShardMapError};

/// add → aggregate → collect → PutRecords request built, with the request
/// dropped instead of sent.
#[derive(Debug)]
pub struct HotPath {
    core: Core,
    ttl: Duration,
    requests: usize,
    entries: usize,
}

impl HotPath {
    /// A core with one stream of `shards` equal shards and its map loaded.
    pub fn new(config: ProducerConfig, stream: &str, shards: u32) -> Result<Self, ShardMapError> {
        let shards = shards.max(1);
        let width = u128::MAX / u128::from(shards);
        let ids: Vec<String> = (0..shards).map(|i| format!("shardId-{i:012}")).collect();
        let ranges = ids.iter().enumerate().map(|(i, id)| {
            let start = width * i as u128;
            let end = if i as u32 + 1 == shards {
                u128::MAX
            } else {
                width * (i as u128 + 1) - 1
            };
            (id.as_str(), start, end)
        });
        let map = ShardMap::from_ranges(ranges)?;
        let ttl = config.record_ttl;
        let mut path = Self {
            core: Core::new(Arc::new(config)),
            ttl,
            requests: 0,
            entries: 0,
        };
        // Route one record so that the stream exists, then install its map.
        path.add(UserRecord::new(stream, "warm-up", "x"));
        path.core.set_shard_map(stream, map, Instant::now());
        Ok(path)
    }

    /// Adds a user record as `Producer::add_user_record` does after its
    /// backpressure permits: hash key, deadline, reply channel, routing.
    pub fn add(&mut self, record: UserRecord) {
        let now = Instant::now();
        let (reply, _receiver) = oneshot::channel();
        self.core.add(Pending {
            hash_key: 0,
            arrival: now,
            expires: now + self.ttl,
            since: now,
            attempts: Vec::new(),
            reply: Some(reply),
            epoch: 0,
            _permits: None,
            record,
        });
    }

    /// Moves everything due on, builds the SDK request entries of every ready
    /// PutRecords call and drops them. With `flush`, sends everything now.
    pub fn drain(&mut self, flush: bool) {
        let now = Instant::now();
        if flush {
            self.core.flush(now);
        } else {
            self.core.poll(now);
        }
        while let Some(mut request) = self.core.take_request() {
            self.requests += 1;
            self.entries += request.sdk_entries().map_or(0, |entries| entries.len());
            // Dropping the request drops its records' reply senders, as a
            // completed request would resolve them.
        }
    }

    /// `(PutRecords requests, Kinesis records)` built so far.
    pub fn built(&self) -> (usize, usize) {
        (self.requests, self.entries)
    }
}

/// The aggregation codec on a set of user records, for the codec
/// benchmarks (`kpl/benches/codec.rs`, and the side-by-side run with the
/// aws-kinesis-agg packages in `integration-tests/benches/codec_peers.rs`).
pub mod codec {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use md5::{Digest, Md5};

    use crate::aggregation::{AGGREGATE_OVERHEAD, AggregateBuilder, decode_aggregate};

    /// The aggregate size bound of the comparison: 51,200 bytes, the AWS
    /// KPL's default `AggregationMaxSize`.
    pub const MAX_AGGREGATE: usize = 51_200;

    /// `count` records of `size` bytes (pseudo-random, fixed seed) under
    /// `keys` partition keys `pk-<n>`.
    pub fn records(
        count: usize,
        keys: usize,
        size: impl Fn(usize) -> usize,
    ) -> Vec<(String, Bytes)> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        (0..count)
            .map(|i| {
                let data: Vec<u8> = (0..size(i))
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                (format!("pk-{}", i % keys.max(1)), Bytes::from(data))
            })
            .collect()
    }

    /// Aggregates `records` in order into aggregates of at most
    /// [`MAX_AGGREGATE`] bytes; returns them and the time taken.
    pub fn aggregate(records: &[(String, Bytes)]) -> (Vec<Bytes>, Duration) {
        let started = Instant::now();
        let mut builder = AggregateBuilder::new();
        let mut out = Vec::new();
        for (key, data) in records {
            if !builder.try_add(key, None, data, MAX_AGGREGATE) {
                out.extend(builder.take().map(|r| r.data));
                builder.add(key, None, data);
            }
        }
        out.extend(builder.take().map(|r| r.data));
        (out, started.elapsed())
    }

    /// Deaggregates every aggregate (MD5 checked); returns the user records
    /// and the time taken.
    pub fn deaggregate(aggregates: &[Bytes]) -> (usize, Duration) {
        let started = Instant::now();
        let mut count = 0;
        for aggregate in aggregates {
            count += match decode_aggregate(aggregate) {
                Ok(records) => records.len(),
                Err(_) => 1,
            };
        }
        (count, started.elapsed())
    }

    /// The floor of deaggregation: only the MD5 of each aggregate's body,
    /// as the digest check computes it.
    pub fn md5_floor(aggregates: &[Bytes]) -> Duration {
        let started = Instant::now();
        let mut sink = 0u8;
        for aggregate in aggregates {
            if aggregate.len() >= AGGREGATE_OVERHEAD {
                let body = &aggregate[4..aggregate.len() - 16];
                sink ^= Md5::digest(body)[0];
            }
        }
        std::hint::black_box(sink);
        started.elapsed()
    }
}
