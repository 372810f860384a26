use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::WRONG_SHARD_AGGREGATE;
use super::types::{Entry, EntryOutcome, Pending, Request, RequestOutcome};
use super::*;
use crate::config::ProducerConfig;
use crate::record::UserRecord;
use crate::shard_map::ShardMap;
use tokio::sync::oneshot;

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

fn one_shard_map() -> ShardMap {
    ShardMap::from_ranges([("shardId-0", 0, u128::MAX)]).expect("map")
}

/// Every entry of every request, after the buffering time.
fn entries_after_flush(core: &mut Core, now: Instant) -> Vec<Request> {
    core.poll(now + Duration::from_millis(110));
    core.flush(now + Duration::from_secs(60));
    drain(core)
}

#[test]
fn an_aggregate_plus_its_partition_key_stays_within_the_record_limit() {
    // Issue 11: a 1 MiB aggregate under a 256-character key was 1 MiB + 254
    // bytes as Kinesis counts it (data plus partition key).
    let config = ProducerConfig {
        aggregation_max_size: 1_048_576,
        // No pacing by the shard's limiter: only the sizes matter here.
        rate_limit: 100_000,
        ..Default::default()
    };
    let mut core = Core::new(Arc::new(config));
    let now = Instant::now();
    core.preload("s");
    core.set_shard_map("s", one_shard_map(), now);
    core.add(pending(
        UserRecord::new("s", "k".repeat(256), vec![1; 700_000]),
        now,
    ));
    core.add(pending(UserRecord::new("s", "b", vec![2; 347_000]), now));
    for i in 0..100 {
        core.add(pending(UserRecord::new("s", format!("c{i}"), "small"), now));
    }
    let requests = entries_after_flush(&mut core, now);
    let entries: Vec<&Entry> = requests.iter().flat_map(|r| &r.entries).collect();
    assert_eq!(entries.iter().map(|e| e.pendings.len()).sum::<usize>(), 102);
    for entry in &entries {
        assert!(
            entry.size() <= 1_048_576,
            "{} bytes of data + {} of partition key",
            entry.record.data.len(),
            entry.record.partition_key.len()
        );
    }
}

#[test]
fn a_stream_s_limits_bound_aggregates_and_requests() {
    use crate::limits::StreamLimits;
    let config = ProducerConfig {
        aggregation_max_size: 10 << 20,
        rate_limit: 100_000,
        ..Default::default()
    };
    let add_big_records = |core: &mut Core, now: Instant| {
        for i in 0..12 {
            core.add(pending(
                UserRecord::new("s", format!("k{i}"), vec![0; 900_000]),
                now,
            ));
        }
    };
    // At the default limits: 1 MiB records, 5 MiB requests.
    let mut core = Core::new(Arc::new(config.clone()));
    let now = Instant::now();
    core.preload("s");
    core.set_shard_map("s", one_shard_map(), now);
    add_big_records(&mut core, now);
    let requests = entries_after_flush(&mut core, now);
    for request in &requests {
        assert!(request.entries.iter().map(Entry::size).sum::<usize>() <= 5 << 20);
        for entry in &request.entries {
            assert!(entry.size() <= 1 << 20, "{}", entry.size());
        }
    }
    // A stream whose records may reach 4 MiB: aggregates up to that, and
    // requests up to 10 MiB.
    let mut core = Core::new(Arc::new(config));
    core.preload("s");
    core.set_stream_limits("s", StreamLimits::from_kib(Some(4_096)));
    core.set_shard_map("s", one_shard_map(), now);
    add_big_records(&mut core, now);
    let requests = entries_after_flush(&mut core, now);
    let largest = requests
        .iter()
        .flat_map(|r| &r.entries)
        .map(Entry::size)
        .max()
        .unwrap_or(0);
    assert!(
        (3 << 20..=4 << 20).contains(&largest),
        "aggregates fill the raised limit: {largest}"
    );
    let largest_request = requests
        .iter()
        .map(|r| r.entries.iter().map(Entry::size).sum::<usize>())
        .max()
        .unwrap_or(0);
    assert!(
        (5 << 20..=10 << 20).contains(&largest_request),
        "requests reach the larger PutRecords limit: {largest_request}"
    );
}

/// The outcome of a request whose every entry was stored in `shard_id`.
fn stored_in(request: &Request, shard_id: &str) -> RequestOutcome {
    RequestOutcome::Entries(
        (0..request.entries.len())
            .map(|i| EntryOutcome::Put {
                sequence_number: format!("{}", 1000 + i),
                shard_id: shard_id.to_owned(),
            })
            .collect(),
    )
}

#[test]
fn an_aggregate_stored_outside_its_records_range_after_a_split_is_put_again() {
    let mut core = Core::new(Arc::new(ProducerConfig::default()));
    let now = Instant::now();
    core.preload("s");
    core.set_shard_map("s", one_shard_map(), now);
    let mut replies = Vec::new();
    for (i, hash_key) in [1u128, u128::MAX - 1].into_iter().enumerate() {
        let (reply, answer) = oneshot::channel();
        let mut record = pending(
            UserRecord::new("s", format!("k{i}"), "data").with_explicit_hash_key(hash_key),
            now,
        );
        record.reply = Some(reply);
        core.add(record);
        replies.push(answer);
    }
    let requests = entries_after_flush(&mut core, now);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].entries.len(), 1, "one aggregate of both");
    // The shard was split meanwhile: the aggregate lands in the low child,
    // whose range does not hold the second record.
    let request = requests.into_iter().next().expect("request");
    let outcome = stored_in(&request, "child-low");
    core.on_response(request, outcome, now);
    assert!(core.wanted_maps().contains(&Arc::from("s")));
    assert_eq!(core.outstanding(), 2, "held until the fresh map");
    let split = ShardMap::from_ranges([
        ("child-low", 0, u128::MAX / 2),
        ("child-high", u128::MAX / 2 + 1, u128::MAX),
    ])
    .expect("map");
    core.set_shard_map("s", split.clone(), now);
    assert_eq!(core.outstanding(), 2, "put again");
    let again = entries_after_flush(&mut core, now);
    let shards: Vec<_> = again
        .iter()
        .flat_map(|r| &r.entries)
        .map(|e| e.shard.as_deref().map(str::to_owned))
        .collect();
    assert_eq!(
        shards.len(),
        2,
        "each record alone in its child: {shards:?}"
    );
    for request in again {
        let shard = request.entries[0]
            .shard
            .as_deref()
            .unwrap_or_default()
            .to_owned();
        let outcome = stored_in(&request, &shard);
        core.on_response(request, outcome, now);
    }
    assert_eq!(core.outstanding(), 0);
    for answer in replies {
        let result = answer.blocking_recv().expect("answered").expect("stored");
        assert_eq!(result.attempts.len(), 2, "{result:?}");
        assert_eq!(
            result.attempts[0].error.as_ref().map(|e| e.code.as_str()),
            Some(WRONG_SHARD_AGGREGATE)
        );
    }

    // An aggregate whose records the landing shard covers is stored as is.
    let (reply, answer) = oneshot::channel();
    let mut record = pending(
        UserRecord::new("s", "a", "data").with_explicit_hash_key(5),
        now,
    );
    record.reply = Some(reply);
    core.add(record);
    core.add(pending(
        UserRecord::new("s", "b", "data").with_explicit_hash_key(7),
        now,
    ));
    let request = entries_after_flush(&mut core, now)
        .into_iter()
        .next()
        .expect("request");
    let outcome = stored_in(&request, "elsewhere-low");
    core.on_response(request, outcome, now);
    let moved = ShardMap::from_ranges([
        ("elsewhere-low", 0, u128::MAX / 2),
        ("child-high", u128::MAX / 2 + 1, u128::MAX),
    ])
    .expect("map");
    core.set_shard_map("s", moved, now);
    assert_eq!(core.outstanding(), 0);
    let result = answer.blocking_recv().expect("answered").expect("stored");
    assert_eq!(result.shard_id, "elsewhere-low");
    assert_eq!(result.attempts.len(), 1);
}

/// A map listed before the reshard (a load already in flight) does not know
/// the shard the aggregate landed in: it decides nothing; the aggregate
/// waits for a newer map, and one that covers it is stored once.
#[test]
fn a_map_that_does_not_know_the_landing_shard_decides_nothing() {
    let mut core = Core::new(Arc::new(ProducerConfig::default()));
    let now = Instant::now();
    core.preload("s");
    core.set_shard_map("s", one_shard_map(), now);
    let (reply, answer) = oneshot::channel();
    let mut record = pending(
        UserRecord::new("s", "a", "data").with_explicit_hash_key(5),
        now,
    );
    record.reply = Some(reply);
    core.add(record);
    // Two records: one alone is sent unaggregated and never held.
    core.add(pending(
        UserRecord::new("s", "b", "data").with_explicit_hash_key(7),
        now,
    ));
    let request = entries_after_flush(&mut core, now)
        .into_iter()
        .next()
        .expect("request");
    let outcome = stored_in(&request, "child-low");
    core.on_response(request, outcome, now);
    assert_eq!(core.outstanding(), 2, "held until a fresh map");
    let _ = core.wanted_maps();
    // The old map once more: it knows no "child-low".
    core.set_shard_map("s", one_shard_map(), now);
    assert_eq!(core.outstanding(), 2, "still held, not put again");
    assert!(
        entries_after_flush(&mut core, now).is_empty(),
        "nothing put again"
    );
    assert!(
        core.wanted_maps().contains(&Arc::from("s")),
        "a newer map is asked for"
    );
    let split = ShardMap::from_ranges([
        ("child-low", 0, u128::MAX / 2),
        ("child-high", u128::MAX / 2 + 1, u128::MAX),
    ])
    .expect("map");
    core.set_shard_map("s", split, now);
    assert_eq!(core.outstanding(), 0);
    let result = answer.blocking_recv().expect("answered").expect("stored");
    assert_eq!(
        (result.shard_id.as_str(), result.attempts.len()),
        ("child-low", 1)
    );
}

#[test]
fn an_aggregate_held_for_a_fresh_map_completes_as_stored_at_its_ttl() {
    let mut core = Core::new(Arc::new(ProducerConfig::default()));
    let now = Instant::now();
    core.preload("s");
    core.set_shard_map("s", one_shard_map(), now);
    let (reply, answer) = oneshot::channel();
    let mut record = pending(UserRecord::new("s", "a", "data"), now);
    record.reply = Some(reply);
    core.add(record);
    core.add(pending(UserRecord::new("s", "b", "data"), now));
    let request = entries_after_flush(&mut core, now)
        .into_iter()
        .next()
        .expect("request");
    let outcome = stored_in(&request, "elsewhere");
    core.on_response(request, outcome, now);
    // ListShards keeps failing: no fresh map comes.
    assert_eq!(core.outstanding(), 2);
    let ttl = now + Duration::from_secs(30);
    assert!(core.next_wakeup().is_some_and(|at| at <= ttl));
    core.poll(ttl);
    assert_eq!(core.outstanding(), 0);
    let result = answer.blocking_recv().expect("answered").expect("stored");
    assert_eq!(result.shard_id, "elsewhere");
}
