//! Collecting a stream's Kinesis records into PutRecords requests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use crate::config::ProducerConfig;

use super::types::{Entry, Request};

/// The Kinesis records of one stream waiting to be sent.
#[derive(Debug, Default)]
pub(super) struct Collector {
    pub(super) entries: Vec<Entry>,
    pub(super) bytes: usize,
    pub(super) deadline: Option<Instant>,
    pub(super) shard_bytes: HashMap<Arc<str>, usize>,
    pub(super) triggered: bool,
}

/// Adds a finished entry; the collector is due `delay` after its first entry.
pub(super) fn collect(
    collector: &mut Collector,
    entry: Entry,
    now: Instant,
    delay: Duration,
    config: &ProducerConfig,
) {
    let size = entry.size();
    collector.bytes += size;
    if let Some(shard) = &entry.shard {
        let bytes = collector.shard_bytes.entry(shard.clone()).or_default();
        *bytes += size;
        collector.triggered |= *bytes >= config.collection_shard_trigger_size;
    }
    let deadline = now + delay;
    collector.deadline = Some(collector.deadline.map_or(deadline, |d| d.min(deadline)));
    collector.entries.push(entry);
}

/// Turns the collector's entries into requests of at most
/// `collection_max_count` records and `max_size` bytes (data plus partition
/// keys, as Kinesis counts them): every full request, and with `due` also the
/// remainder.
pub(super) fn drain_collector(
    collector: &mut Collector,
    stream: &Arc<str>,
    max_size: usize,
    config: &ProducerConfig,
    due: bool,
    ready: &mut VecDeque<Request>,
) {
    loop {
        let full =
            collector.entries.len() >= config.collection_max_count || collector.bytes >= max_size;
        if collector.entries.is_empty() || !(full || due) {
            return;
        }
        // The longest prefix within both limits (at least one entry).
        let mut count = 0;
        let mut bytes = 0;
        for entry in &collector.entries {
            let size = entry.size();
            if count == config.collection_max_count || (count > 0 && bytes + size > max_size) {
                break;
            }
            count += 1;
            bytes += size;
        }
        let rest = collector.entries.split_off(count);
        let entries = std::mem::replace(&mut collector.entries, rest);
        collector.bytes -= bytes;
        recount(collector, config);
        ready.push_back(Request {
            stream: stream.clone(),
            entries,
            started: None,
        });
    }
}

fn recount(collector: &mut Collector, config: &ProducerConfig) {
    collector.shard_bytes.clear();
    collector.triggered = false;
    if collector.entries.is_empty() {
        collector.deadline = None;
    }
    for entry in &collector.entries {
        if let Some(shard) = &entry.shard {
            let bytes = collector.shard_bytes.entry(shard.clone()).or_default();
            *bytes += entry.size();
            collector.triggered |= *bytes >= config.collection_shard_trigger_size;
        }
    }
}
