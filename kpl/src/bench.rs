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
