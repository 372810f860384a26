use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::{Entry, Pending, Request};
use super::*;
use crate::config::ProducerConfig;
use crate::record::UserRecord;
use crate::shard_map::ShardMap;

fn pending(record: UserRecord, now: Instant) -> Pending {
    Pending {
        record,
        hash_key: 0,
        arrival: now,
        expires: now + Duration::from_secs(30),
        since: now,
        attempts: Vec::new(),
        reply: None,
        epoch: 0,
        _permits: None,
    }
}

fn drain(core: &mut Core) -> Vec<Request> {
    std::iter::from_fn(|| core.take_request()).collect()
}

#[test]
fn requests_never_exceed_the_collection_limits() {
    let config = ProducerConfig {
        collection_max_size: 20_000,
        ..Default::default()
    };
    let mut core = Core::new(Arc::new(config));
    let now = Instant::now();
    // No shard map yet: every record travels alone, straight to the collector.
    for i in 0..1_200 {
        let size = if i % 7 == 0 { 1_000 } else { 10 };
        core.add(pending(
            UserRecord::new("s", format!("k{i}"), vec![0; size]),
            now,
        ));
    }
    core.flush(now);
    let requests = drain(&mut core);
    let mut total = 0;
    for request in &requests {
        let bytes: usize = request.entries.iter().map(Entry::size).sum();
        assert!(
            request.entries.len() <= 500,
            "{} entries",
            request.entries.len()
        );
        assert!(bytes <= 20_000, "{bytes} bytes");
        total += request.entries.len();
    }
    assert_eq!(total, 1_200);
}

#[test]
fn early_records_wait_for_the_map_and_aggregates_stay_within_one_shard() {
    let mut core = Core::new(Arc::new(ProducerConfig::default()));
    let now = Instant::now();
    core.add(pending(UserRecord::new("s", "first", "x"), now));
    let map = ShardMap::from_ranges([
        ("low", 0, u128::MAX / 2),
        ("high", u128::MAX / 2 + 1, u128::MAX),
    ])
    .expect("map");
    core.set_shard_map("s", map.clone(), now);
    for i in 0..100 {
        core.add(pending(UserRecord::new("s", format!("k{i}"), "data"), now));
    }
    core.poll(now);
    assert!(drain(&mut core).is_empty(), "nothing is due yet");
    // Past the buffering deadline (100 ms) and the collection delay (20 ms).
    core.poll(now + Duration::from_millis(110));
    core.poll(now + Duration::from_millis(140));
    let requests = drain(&mut core);
    let entries: Vec<&Entry> = requests.iter().flat_map(|r| &r.entries).collect();
    // The record added before the map waited for it and was aggregated too.
    assert_eq!(entries.iter().map(|e| e.pendings.len()).sum::<usize>(), 101);
    assert!(entries.len() <= 2, "one aggregate per shard");
    for entry in entries.into_iter().filter(|e| e.shard.is_some()) {
        let shard = entry.shard.as_deref().expect("predicted shard");
        assert!(entry.aggregated);
        for pending in &entry.pendings {
            let index = map.shard_for(pending.hash_key).expect("in a shard");
            assert_eq!(&**map.shard_id(index), shard);
        }
    }
}
