//! The consumer (kcl::scheduler) against the embedded back ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{LocalAws, resources, unique_name};
use kcl::lease::LeaseTable;
use kcl::processor::*;
use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, Scheduler};
use kpl::{Producer, UserRecord};

/// `(worker, shard, sequence, sub-sequence, data)` of every record seen.
type Seen = Arc<Mutex<Vec<(String, String, String, u64, String)>>>;

struct Collector {
    worker: String,
    shard: String,
    seen: Seen,
}

impl RecordProcessor for Collector {
    async fn initialize(&mut self, _input: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        {
            let mut seen = self.seen.lock().expect("lock");
            for record in &input.records {
                seen.push((
                    self.worker.clone(),
                    self.shard.clone(),
                    record.sequence_number.clone(),
                    record.sub_sequence_number,
                    String::from_utf8_lossy(&record.data).into_owned(),
                ));
            }
        }
        let _ = checkpointer.checkpoint().await;
    }
    async fn lease_lost(&mut self) {}
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        checkpointer
            .checkpoint_shard_end()
            .await
            .expect("SHARD_END checkpoint");
    }
    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

fn config(app: &str, stream: &str, worker: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(app, stream, worker);
    config.initial_position = StartingPosition::TrimHorizon;
    config.failover_time = Duration::from_secs(3);
    config.idle_time_between_reads = Duration::from_millis(100);
    config.shard_sync_interval = Duration::from_secs(1);
    config
}

fn start(
    sdk_config: &aws_config::SdkConfig,
    config: ConsumerConfig,
    seen: &Seen,
) -> (kcl::scheduler::ShutdownHandle, tokio::task::JoinHandle<()>) {
    let worker = config.worker_id.clone();
    let seen = seen.clone();
    let scheduler = Scheduler::new(sdk_config, config, move |shard: &str| Collector {
        worker: worker.clone(),
        shard: shard.to_owned(),
        seen: seen.clone(),
    });
    let handle = scheduler.shutdown_handle();
    let task = tokio::spawn(async move {
        scheduler.run().await.expect("scheduler");
    });
    (handle, task)
}

/// Produces `count` records numbered from `first`; returns (shard, seq, sub, data).
async fn produce(
    producer: &Producer,
    stream: &str,
    first: usize,
    count: usize,
) -> Vec<(String, String, u64, String)> {
    let mut pending = Vec::new();
    for i in first..first + count {
        let data = format!("record-{i:06}");
        pending.push((
            data.clone(),
            producer
                .add_user_record(UserRecord::new(stream, format!("pk-{}", i % 101), data))
                .await
                .expect("accepted"),
        ));
    }
    let mut out = Vec::new();
    for (data, result) in pending {
        let result = result.await.expect("stored");
        out.push((
            result.shard_id,
            result.sequence_number,
            result.sub_sequence_number,
            data,
        ));
    }
    out
}

/// A new stream of `shards` shards holding `count` records produced with
/// kpl; returns its name and the records as [`produce`] does.
async fn stream_with_records(
    aws: &LocalAws,
    prefix: &str,
    shards: i32,
    count: usize,
) -> (String, Vec<(String, String, u64, String)>) {
    let stream = unique_name(prefix);
    resources::create_stream(&aws.kinesis_client(), &stream, shards)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let records = produce(&producer, &stream, 0, count).await;
    producer.shutdown().await.expect("producer shutdown");
    (stream, records)
}

async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_sees_every_record_of_four_shards_exactly_once() {
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("consume");
    resources::create_stream(&aws.kinesis_client(), &stream, 4)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut expected = produce(&producer, &stream, 0, 4_000).await;
    // A few plain (not aggregated) records too.
    for i in 0..20 {
        let out = aws
            .kinesis_client()
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("plain-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(
                format!("plain-{i}").into_bytes(),
            ))
            .send()
            .await
            .expect("PutRecord");
        expected.push((
            out.shard_id().to_owned(),
            out.sequence_number().to_owned(),
            0,
            format!("plain-{i}"),
        ));
    }
    producer.shutdown().await.expect("producer shutdown");

    let seen: Seen = Arc::default();
    let app = unique_name("app");
    let (handle, task) = start(aws.sdk_config(), config(&app, &stream, "worker-1"), &seen);
    wait_until("every record", Duration::from_secs(60), || {
        seen.lock().expect("lock").len() >= expected.len()
    })
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");

    let got: Vec<_> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, shard, seq, sub, data)| (shard.clone(), seq.clone(), *sub, data.clone()))
        .collect();
    let got_set: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no record twice");
    assert_eq!(
        got_set,
        expected.into_iter().collect::<HashSet<_>>(),
        "every record, with its sub-sequence number"
    );
    // Graceful shutdown handed the leases back.
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let leases = table.list_leases().await.expect("leases");
    assert_eq!(leases.len(), 4);
    assert!(leases.iter().all(|l| l.lease_owner.is_none()), "{leases:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_shards_and_one_takes_over_when_the_other_dies() {
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("balance");
    resources::create_stream(&aws.kinesis_client(), &stream, 4)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut expected = produce(&producer, &stream, 0, 1_000).await;

    let seen: Seen = Arc::default();
    let app = unique_name("app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let (a, a_task) = start(aws.sdk_config(), config(&app, &stream, "worker-a"), &seen);
    let (_b, b_task) = start(aws.sdk_config(), config(&app, &stream, "worker-b"), &seen);

    // 2/2 within a few lease intervals.
    let started = Instant::now();
    loop {
        let leases = table.list_leases().await.unwrap_or_default();
        let owned_by = |w: &str| {
            leases
                .iter()
                .filter(|l| l.lease_owner.as_deref() == Some(w))
                .count()
        };
        if leases.len() == 4 && owned_by("worker-a") == 2 && owned_by("worker-b") == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no 2/2 split: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until("the first records", Duration::from_secs(30), || {
        seen.lock().expect("lock").len() >= expected.len()
    })
    .await;

    // Kill b without releasing anything; a owns all four within failover + a renewal.
    b_task.abort();
    let _ = b_task.await;
    let killed = Instant::now();
    loop {
        let leases = table.list_leases().await.unwrap_or_default();
        if leases
            .iter()
            .filter(|l| l.lease_owner.as_deref() == Some("worker-a"))
            .count()
            == 4
        {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3 + 1 + 3),
            "a did not take over: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Records produced after the death arrive through a, resuming from b's checkpoints.
    expected.extend(produce(&producer, &stream, 1_000, 1_000).await);
    producer.shutdown().await.expect("producer shutdown");
    let wanted: HashSet<String> = expected.iter().map(|e| e.3.clone()).collect();
    wait_until(
        "every record after the take-over",
        Duration::from_secs(60),
        || {
            let seen = seen.lock().expect("lock");
            wanted.iter().all(|w| seen.iter().any(|s| &s.4 == w))
        },
    )
    .await;
    a.graceful().await;
    a_task.await.expect("scheduler task");
    let seen = seen.lock().expect("lock");
    let after: Vec<_> = seen
        .iter()
        .filter(|s| s.4.as_str() >= "record-001000")
        .collect();
    assert!(after.iter().all(|s| s.0 == "worker-a"), "only a remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_and_a_merge_every_parent_record_comes_before_any_child_record() {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let stream = unique_name("reshard");
    resources::create_stream(&kinesis, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let seen: Seen = Arc::default();
    let app = unique_name("app");
    let (handle, task) = start(aws.sdk_config(), config(&app, &stream, "worker-1"), &seen);

    let mut expected = produce(&producer, &stream, 0, 300).await;
    let parent = expected[0].0.clone();
    resources::split_shard(&kinesis, &stream, &parent)
        .await
        .expect("SplitShard");
    // A new producer per phase, so that its first shard map shows the new
    // shards. (With a stale map a whole aggregate lands in one child; the
    // consumer delivers those records all the same, but this test wants
    // records in every shard.)
    producer.shutdown().await.expect("producer shutdown");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    expected.extend(produce(&producer, &stream, 300, 300).await);
    let mut children: Vec<String> = kpl::shard_map::list_shards(&kinesis, &stream)
        .await
        .expect("ListShards")
        .iter()
        .filter(|s| s.parent_shard_id() == Some(parent.as_str()))
        .map(|s| s.shard_id().to_owned())
        .collect();
    children.sort();
    assert_eq!(children.len(), 2);
    resources::merge_shards(&kinesis, &stream, &children[0], &children[1])
        .await
        .expect("MergeShards");
    // A new producer per phase, so that its first shard map shows the new
    // shards. (With a stale map a whole aggregate lands in one child; the
    // consumer delivers those records all the same, but this test wants
    // records in every shard.)
    producer.shutdown().await.expect("producer shutdown");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    expected.extend(produce(&producer, &stream, 600, 300).await);
    producer.shutdown().await.expect("producer shutdown");

    wait_until("every record", Duration::from_secs(90), || {
        seen.lock().expect("lock").len() >= expected.len()
    })
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");

    let shards = kpl::shard_map::list_shards(&kinesis, &stream)
        .await
        .expect("ListShards");
    let seen = seen.lock().expect("lock").clone();
    let order = |shard: &str| -> Vec<usize> {
        seen.iter()
            .enumerate()
            .filter(|(_, s)| s.1 == shard)
            .map(|(i, _)| i)
            .collect()
    };
    let mut checked = 0;
    for shard in &shards {
        for parent in [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
            .into_iter()
            .flatten()
        {
            let (parent_records, child_records) = (order(parent), order(shard.shard_id()));
            if let (Some(last_parent), Some(first_child)) =
                (parent_records.iter().max(), child_records.iter().min())
            {
                assert!(
                    last_parent < first_child,
                    "{parent} finished before {} started",
                    shard.shard_id()
                );
                checked += 1;
            }
        }
    }
    let lineage: Vec<_> = shards
        .iter()
        .map(|s| {
            (
                s.shard_id(),
                s.parent_shard_id(),
                s.adjacent_parent_shard_id(),
                order(s.shard_id()).len(),
                s.hash_key_range().map(|r| r.starting_hash_key().len()),
                expected.iter().filter(|e| e.0 == s.shard_id()).count(),
            )
        })
        .collect();
    assert!(
        checked == 4,
        "split and merge lineage checked ({checked} parent/child pairs): {lineage:?}"
    );
    let got: HashSet<String> = seen.iter().map(|s| s.4.clone()).collect();
    assert_eq!(got.len(), expected.len(), "every record, none lost");
    resources::delete_stream(&kinesis, &stream)
        .await
        .expect("cleanup");
}

/// Checkpoints at the fourth sub-record of the first aggregate it sees, and
/// nothing else.
struct StopsMidAggregate {
    shard: String,
    at: Arc<Mutex<Vec<(String, kcl::checkpoint::ExtendedSequenceNumber)>>>,
    done: bool,
}

impl RecordProcessor for StopsMidAggregate {
    async fn initialize(&mut self, _input: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.done {
            return;
        }
        if let Some(record) = input
            .records
            .iter()
            .find(|r| r.aggregated && r.sub_sequence_number == 3)
        {
            checkpointer
                .checkpoint_at(record)
                .await
                .expect("checkpoint mid-aggregate");
            self.at
                .lock()
                .expect("lock")
                .push((self.shard.clone(), record.extended_sequence_number()));
            self.done = true;
        }
    }
    async fn lease_lost(&mut self) {}
    async fn shard_ended(&mut self, _checkpointer: &mut Checkpointer) {}
    async fn shutdown_requested(&mut self, _checkpointer: &mut Checkpointer) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_resumes_at_the_next_sub_record_after_its_checkpoint() {
    restart_resumes_after_the_checkpoint(false).await;
}

/// The same with the restarted worker on enhanced fan-out. (ferrokinesis
/// replays a subscription from the shard's start whatever position it is
/// given; the reader skips what is at or before the checkpoint.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_worker_resumes_at_the_next_sub_record_after_a_checkpoint() {
    restart_resumes_after_the_checkpoint(true).await;
}

/// A first worker checkpoints in the middle of an aggregate in every shard;
/// a second one (polling, or enhanced fan-out) resumes right after.
async fn restart_resumes_after_the_checkpoint(fan_out: bool) {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, expected) = stream_with_records(&aws, "restart", 2, 2_000).await;
    let app = unique_name("app");

    let at: Arc<Mutex<Vec<(String, kcl::checkpoint::ExtendedSequenceNumber)>>> = Arc::default();
    let first = {
        let at = at.clone();
        Scheduler::new(
            aws.sdk_config(),
            config(&app, &stream, "worker-1"),
            move |shard: &str| StopsMidAggregate {
                shard: shard.to_owned(),
                at: at.clone(),
                done: false,
            },
        )
    };
    let handle = first.shutdown_handle();
    let task = tokio::spawn(first.run());
    wait_until(
        "a checkpoint in every shard",
        Duration::from_secs(30),
        || at.lock().expect("lock").len() == 2,
    )
    .await;
    handle.graceful().await;
    task.await.expect("task").expect("scheduler");

    // Restart: each shard resumes right after its checkpoint.
    let seen: Seen = Arc::default();
    let mut restarted = config(&app, &stream, "worker-2");
    if fan_out {
        restarted.retrieval = kcl::scheduler::RetrievalMode::FanOut {
            consumer_name: unique_name("efo-consumer"),
        };
    }
    let (handle, task) = start(aws.sdk_config(), restarted, &seen);
    let checkpoints = at.lock().expect("lock").clone();
    let remaining: usize = checkpoints
        .iter()
        .map(|(shard, position)| {
            let in_shard: Vec<_> = expected.iter().filter(|e| &e.0 == shard).collect();
            let done = in_shard
                .iter()
                .position(|e| {
                    Some(e.1.as_str()) == position.sequence_number()
                        && e.2 == position.sub_sequence_number()
                })
                .expect("checkpointed record was produced");
            in_shard.len() - done - 1
        })
        .sum();
    wait_until("the rest of the records", Duration::from_secs(30), || {
        seen.lock().expect("lock").len() >= remaining
    })
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        remaining,
        "nothing before the checkpoints again"
    );
    for (shard, position) in checkpoints {
        let first = seen
            .iter()
            .find(|s| s.1 == shard)
            .expect("records of the shard");
        assert_eq!(
            Some(first.2.as_str()),
            position.sequence_number(),
            "same aggregate"
        );
        assert_eq!(
            first.3,
            position.sub_sequence_number() + 1,
            "next sub-record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_written_by_a_java_kcl_application_is_consumed_from_its_checkpoints() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, expected) = stream_with_records(&aws, "java", 2, 1_000).await;

    // The Java application had processed each shard up to its 100th record
    // and left the leases to a worker that has since died.
    let app = unique_name("java-app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    table.create_if_missing().await.expect("table");
    let mut remaining = 0;
    let mut resume_after = Vec::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let in_shard: Vec<_> = expected.iter().filter(|e| e.0 == shard).collect();
        let done = in_shard[99];
        remaining += in_shard.len() - 100;
        resume_after.push((shard, done.1.clone(), done.2));
        let item = [
            ("leaseKey", AttributeValue::S(shard.into())),
            ("leaseOwner", AttributeValue::S("java-worker-dead".into())),
            ("leaseCounter", AttributeValue::N("77".into())),
            ("checkpoint", AttributeValue::S(done.1.clone())),
            (
                "checkpointSubSequenceNumber",
                AttributeValue::N(done.2.to_string()),
            ),
            (
                "ownerSwitchesSinceCheckpoint",
                AttributeValue::N("0".into()),
            ),
        ];
        aws.dynamodb_client()
            .put_item()
            .table_name(&app)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await
            .expect("PutItem");
    }

    let seen: Seen = Arc::default();
    let (handle, task) = start(
        aws.sdk_config(),
        config(&app, &stream, "rust-worker"),
        &seen,
    );
    wait_until(
        "the records after the Java checkpoints",
        Duration::from_secs(30),
        || seen.lock().expect("lock").len() >= remaining,
    )
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), remaining, "nothing before the checkpoints");
    for (shard, sequence, sub) in resume_after {
        let first = seen
            .iter()
            .find(|s| s.1 == shard)
            .expect("records of the shard");
        let position = (first.2.clone(), first.3);
        assert!(
            kcl::checkpoint::ExtendedSequenceNumber::new(position.0, position.1)
                > kcl::checkpoint::ExtendedSequenceNumber::new(sequence, sub),
            "{shard} resumed after the Java checkpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_fan_out_reads_the_same_records_as_polling() {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, expected) = stream_with_records(&aws, "efo", 2, 2_000).await;

    let mut results = Vec::new();
    for fan_out in [false, true] {
        let seen: Seen = Arc::default();
        let mut config = config(&unique_name("app"), &stream, "worker-1");
        if fan_out {
            config.retrieval = kcl::scheduler::RetrievalMode::FanOut {
                consumer_name: unique_name("efo-consumer"),
            };
        }
        let (handle, task) = start(aws.sdk_config(), config, &seen);
        wait_until("every record", Duration::from_secs(60), || {
            seen.lock().expect("lock").len() >= expected.len()
        })
        .await;
        handle.graceful().await;
        task.await.expect("scheduler task");
        let got: Vec<(String, String, u64, String)> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|s| (s.1.clone(), s.2.clone(), s.3, s.4.clone()))
            .collect();
        let unique: HashSet<_> = got.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "no record twice (fan-out: {fan_out})"
        );
        results.push(unique);
    }
    assert_eq!(
        results[0], results[1],
        "polling and fan-out see the same records"
    );
    assert_eq!(results[0], expected.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_consumes_several_streams_with_multi_stream_lease_keys() {
    let aws = LocalAws::start().await.expect("local AWS");
    let streams = [unique_name("orders"), unique_name("payments")];
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut expected = HashSet::new();
    for (n, stream) in streams.iter().enumerate() {
        resources::create_stream(&aws.kinesis_client(), stream, 2)
            .await
            .expect("stream");
        for record in produce(&producer, stream, n * 1_000, 500).await {
            expected.insert(record.3);
        }
    }
    producer.shutdown().await.expect("producer shutdown");

    let app = unique_name("multi");
    let mut config = ConsumerConfig::multi_stream(&app, streams.clone(), "worker-1");
    let single = self::config(&app, &streams[0], "worker-1");
    config.initial_position = single.initial_position;
    config.failover_time = single.failover_time;
    config.idle_time_between_reads = single.idle_time_between_reads;
    config.shard_sync_interval = single.shard_sync_interval;
    let seen: Seen = Arc::default();
    let (handle, task) = start(aws.sdk_config(), config, &seen);
    wait_until(
        "every record of both streams",
        Duration::from_secs(60),
        || seen.lock().expect("lock").len() >= expected.len(),
    )
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");
    let got: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.4.clone())
        .collect();
    assert_eq!(got.len(), expected.len(), "no record twice");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected);

    let leases = LeaseTable::new(aws.dynamodb_client(), &app)
        .list_leases()
        .await
        .expect("leases");
    assert_eq!(leases.len(), 4);
    for lease in &leases {
        let parts: Vec<&str> = lease.lease_key.split(':').collect();
        assert_eq!(
            parts.len(),
            4,
            "account:stream:creationEpoch:shardId, got {}",
            lease.lease_key
        );
        assert!(streams.iter().any(|s| s == parts[1]));
        assert!(parts[2].parse::<u64>().is_ok(), "creation epoch");
        assert_eq!(lease.shard(), parts[3]);
        assert_eq!(lease.stream(), Some(parts[1]));
    }
}

/// What one incarnation of a [`GivesUp`] processor saw.
#[derive(Debug, Default, Clone)]
struct Incarnation {
    shard: String,
    started_at: Option<kcl::checkpoint::ExtendedSequenceNumber>,
    records: Vec<kcl::checkpoint::ExtendedSequenceNumber>,
    calls_after_end: usize,
    lease_lost_called: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    /// Checkpoint half of the first batch, then `release_lease`.
    Release,
    /// Another worker takes the lease, then checkpoint.
    LoseLease,
}

/// The first processor of each shard gives up after its first batch; later
/// ones process normally.
struct GivesUp {
    mode: GiveUp,
    table: LeaseTable,
    lease_key: String,
    log: Arc<Mutex<Vec<Incarnation>>>,
    index: usize,
    ended: bool,
}

impl GivesUp {
    fn new(
        mode: GiveUp,
        table: LeaseTable,
        lease_key: &str,
        log: &Arc<Mutex<Vec<Incarnation>>>,
    ) -> Self {
        let mut entries = log.lock().expect("lock");
        entries.push(Incarnation {
            shard: lease_key.to_owned(),
            ..Default::default()
        });
        Self {
            mode,
            table,
            lease_key: lease_key.to_owned(),
            log: log.clone(),
            index: entries.len() - 1,
            ended: false,
        }
    }

    fn first_of_its_shard(&self) -> bool {
        let log = self.log.lock().expect("lock");
        !log[..self.index].iter().any(|i| i.shard == self.lease_key)
    }
}

impl RecordProcessor for GivesUp {
    async fn initialize(&mut self, input: InitializationInput) {
        self.log.lock().expect("lock")[self.index].started_at =
            Some(input.extended_sequence_number);
    }
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.ended {
            self.log.lock().expect("lock")[self.index].calls_after_end += 1;
            return;
        }
        if input.records.is_empty() {
            return;
        }
        if !self.first_of_its_shard() {
            self.log.lock().expect("lock")[self.index]
                .records
                .extend(input.records.iter().map(|r| r.extended_sequence_number()));
            checkpointer.checkpoint().await.expect("checkpoint");
            return;
        }
        self.ended = true;
        let half = &input.records[..input.records.len().div_ceil(2)];
        let last = half.last().expect("a record");
        match self.mode {
            GiveUp::Release => {
                checkpointer.checkpoint_at(last).await.expect("checkpoint");
                self.log.lock().expect("lock")[self.index]
                    .records
                    .extend(half.iter().map(|r| r.extended_sequence_number()));
                checkpointer.release_lease();
                assert!(checkpointer.is_ended());
                assert!(matches!(
                    checkpointer.checkpoint().await,
                    Err(CheckpointError::LeaseLost(_))
                ));
            }
            GiveUp::LoseLease => {
                // A thief takes the lease; it then dies, so the lease
                // expires and comes back.
                let mut lease = self
                    .table
                    .get_lease(&self.lease_key)
                    .await
                    .expect("get")
                    .expect("lease");
                assert!(self.table.take(&mut lease, "thief").await.expect("take"));
                assert!(matches!(
                    checkpointer.checkpoint_at(last).await,
                    Err(CheckpointError::LeaseLost(_))
                ));
                assert!(checkpointer.is_ended());
            }
        }
    }
    async fn lease_lost(&mut self) {
        self.log.lock().expect("lock")[self.index].lease_lost_called = true;
    }
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

/// A processor that gives its lease back (or finds it taken when it
/// checkpoints) is called no more; a new processor resumes at the
/// checkpoint, and every record after it is processed.
async fn a_processor_that_gives_up_is_replaced(mode: GiveUp) {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, expected) = stream_with_records(&aws, "giveup", 2, 2_000).await;
    let app = unique_name("app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let log: Arc<Mutex<Vec<Incarnation>>> = Arc::default();
    let scheduler = {
        let (log, table) = (log.clone(), table.clone());
        Scheduler::new(
            aws.sdk_config(),
            config(&app, &stream, "worker-1"),
            move |lease_key: &str| GivesUp::new(mode, table.clone(), lease_key, &log),
        )
    };
    let handle = scheduler.shutdown_handle();
    let task = tokio::spawn(scheduler.run());
    // The replacements see every record after the first processors' checkpoints.
    let last_of = |shard: &str| {
        let e = expected.iter().rfind(|e| e.0 == shard).expect("records");
        kcl::checkpoint::ExtendedSequenceNumber::new(e.1.clone(), e.2)
    };
    wait_until(
        "every shard read to its end by a replacement",
        Duration::from_secs(60),
        || {
            let log = log.lock().expect("lock");
            ["shardId-000000000000", "shardId-000000000001"]
                .iter()
                .all(|shard| {
                    log.iter()
                        .filter(|i| i.shard == *shard)
                        .skip(1)
                        .any(|i| i.records.last() == Some(&last_of(shard)))
                })
        },
    )
    .await;
    handle.graceful().await;
    task.await.expect("task").expect("scheduler");

    let log = log.lock().expect("lock").clone();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let incarnations: Vec<&Incarnation> = log.iter().filter(|i| i.shard == shard).collect();
        let (first, second) = (incarnations[0], incarnations[1]);
        assert_eq!(first.calls_after_end, 0, "{shard}: no call after giving up");
        assert_eq!(
            first.lease_lost_called,
            mode == GiveUp::LoseLease,
            "{shard}"
        );
        let resumed_at = second.started_at.clone().expect("initialized");
        match mode {
            GiveUp::Release => {
                assert_eq!(
                    Some(&resumed_at),
                    first.records.last(),
                    "{shard}: at the checkpoint"
                );
            }
            GiveUp::LoseLease => {
                assert_eq!(
                    resumed_at,
                    kcl::checkpoint::ExtendedSequenceNumber::TRIM_HORIZON,
                    "{shard}: the refused checkpoint did not move"
                );
            }
        }
        // Everything after the checkpoint, once, in order.
        let rest: Vec<_> = expected
            .iter()
            .filter(|e| e.0 == shard)
            .map(|e| kcl::checkpoint::ExtendedSequenceNumber::new(e.1.clone(), e.2))
            .filter(|p| resumed_at.sequence_number().is_none() || *p > resumed_at)
            .collect();
        assert_eq!(second.records, rest, "{shard}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_releases_its_lease_is_replaced_at_its_checkpoint() {
    a_processor_that_gives_up_is_replaced(GiveUp::Release).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_finds_the_lease_taken_ends_the_processor() {
    a_processor_that_gives_up_is_replaced(GiveUp::LoseLease).await;
}

/// Records every record and counts every call, empty batches included (so a
/// test knows each shard's reader has resolved its starting position).
struct Watcher {
    shard: String,
    seen: Seen,
    calls: Arc<Mutex<Vec<String>>>,
}

impl RecordProcessor for Watcher {
    async fn initialize(&mut self, _input: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        self.calls.lock().expect("lock").push(self.shard.clone());
        {
            let mut seen = self.seen.lock().expect("lock");
            for record in &input.records {
                seen.push((
                    String::new(),
                    self.shard.clone(),
                    record.sequence_number.clone(),
                    record.sub_sequence_number,
                    String::from_utf8_lossy(&record.data).into_owned(),
                ));
            }
        }
        let _ = checkpointer.checkpoint().await;
    }
    async fn lease_lost(&mut self) {}
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint_shard_end().await;
    }
    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        let _ = checkpointer.checkpoint().await;
    }
}

/// A new application on a stream that was resharded before it started reads
/// from its starting position only: at LATEST, none of the records written
/// before it started — not those of the closed parent, nor those already in
/// the children (issue 11, defect 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_application_at_latest_on_a_resharded_stream_reads_only_new_records() {
    new_application_on_a_resharded_stream(|| StartingPosition::Latest).await;
}

/// The same at AT_TIMESTAMP after every record written before the start;
/// also: each record once, in order (a closed parent's records were
/// delivered twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_application_at_a_timestamp_on_a_resharded_stream_reads_only_later_records() {
    new_application_on_a_resharded_stream(|| {
        StartingPosition::AtTimestamp(std::time::SystemTime::now())
    })
    .await;
}

async fn new_application_on_a_resharded_stream(initial: impl FnOnce() -> StartingPosition) {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let (stream, old) = stream_with_records(&aws, "late-start", 1, 50).await;
    resources::split_shard(&kinesis, &stream, &old[0].0)
        .await
        .expect("SplitShard");
    // A new producer, whose shard map shows the children.
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let in_children = produce(&producer, &stream, 50, 200).await;
    assert!(
        in_children.iter().all(|r| r.0 != old[0].0),
        "in the children"
    );
    // The embedded Kinesis keeps arrival times in whole seconds.
    resources::sleep_past_arrival_times().await;
    let initial = initial();

    let seen: Seen = Arc::default();
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = config(&unique_name("app"), &stream, "worker-1");
    config.initial_position = initial;
    config.process_empty_batches = true;
    let scheduler = {
        let (seen, calls) = (seen.clone(), calls.clone());
        Scheduler::new(aws.sdk_config(), config, move |shard: &str| Watcher {
            shard: shard.to_owned(),
            seen: seen.clone(),
            calls: calls.clone(),
        })
    };
    let handle = scheduler.shutdown_handle();
    let task = tokio::spawn(scheduler.run());
    let children: HashSet<String> = in_children.iter().map(|r| r.0.clone()).collect();
    wait_until("both children read", Duration::from_secs(30), || {
        let calls = calls.lock().expect("lock");
        children.iter().all(|c| calls.contains(c))
    })
    .await;
    let new = produce(&producer, &stream, 1_000, 20).await;
    producer.shutdown().await.expect("producer shutdown");
    wait_until("the new records", Duration::from_secs(30), || {
        seen.lock().expect("lock").len() >= new.len()
    })
    .await;
    // Time for anything older to show up too: a parent's lease is deleted
    // once its children have checkpointed, and a shard sync (every second
    // here) once leased it again, reading the parent a second time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    handle.graceful().await;
    task.await.expect("scheduler task").expect("scheduler");

    let seen = seen.lock().expect("lock").clone();
    let mut got: Vec<String> = seen.iter().map(|s| s.4.clone()).collect();
    got.sort();
    let mut want: Vec<String> = new.iter().map(|r| r.3.clone()).collect();
    want.sort();
    assert_eq!(
        got, want,
        "exactly the records written after the start, once"
    );
    resources::delete_stream(&kinesis, &stream)
        .await
        .expect("cleanup");
}

/// A worker started on a lease table that also holds a KCL 3.5 worker-metrics
/// row, a leader item and an unreadable lease consumes every record, and
/// leaves those items as they were (issue 11, defect 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_that_are_not_leases_do_not_stop_the_consumer() {
    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, expected) = stream_with_records(&aws, "foreign-items", 2, 100).await;
    let app = unique_name("app");
    let dynamodb = aws.dynamodb_client();
    LeaseTable::new(dynamodb.clone(), &app)
        .create_if_missing()
        .await
        .expect("table");
    let foreign = resources::foreign_lease_table_items();
    for item in &foreign {
        dynamodb
            .put_item()
            .table_name(&app)
            .set_item(Some(item.clone()))
            .send()
            .await
            .expect("PutItem");
    }
    let seen: Seen = Arc::default();
    let (handle, task) = start(aws.sdk_config(), config(&app, &stream, "worker-1"), &seen);
    wait_until("every record", Duration::from_secs(30), || {
        seen.lock().expect("lock").len() >= expected.len()
    })
    .await;
    handle.graceful().await;
    task.await.expect("scheduler task");
    let got: HashSet<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.4.clone())
        .collect();
    assert_eq!(got.len(), expected.len(), "every record");
    for item in foreign {
        let key = item["leaseKey"].clone();
        let stored = dynamodb
            .get_item()
            .table_name(&app)
            .key("leaseKey", key)
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item()
            .cloned();
        assert_eq!(stored, Some(item), "left as it was");
    }
}
