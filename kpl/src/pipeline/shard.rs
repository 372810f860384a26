//! One predicted shard: its aggregator, the entries waiting for its rate
//! limiter, and the limiter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::aggregation::AggregateBuilder;
use crate::limiter::ShardLimiter;

use super::types::{Entry, Pending};

/// The state of one predicted shard.
#[derive(Debug)]
pub(super) struct ShardState {
    pub(super) id: Arc<str>,
    pub(super) aggregator: AggregateBuilder,
    pub(super) pendings: Vec<Pending>,
    pub(super) deadline: Option<Instant>,
    /// Finished entries waiting for the rate limiter.
    pub(super) queue: VecDeque<Entry>,
    pub(super) limiter: ShardLimiter,
}

/// Finishes the shard's aggregate, if any, and queues it for the limiter.
pub(super) fn flush_aggregator(shard: &mut ShardState) {
    shard.deadline = None;
    let Some(record) = shard.aggregator.take() else {
        return;
    };
    // The next aggregate likely holds as many records: size its list alike.
    let capacity = shard.pendings.len();
    let pendings = std::mem::replace(&mut shard.pendings, Vec::with_capacity(capacity));
    let aggregated = record.user_records > 1;
    shard.queue.push_back(Entry {
        record,
        pendings,
        shard: Some(shard.id.clone()),
        aggregated,
    });
}
