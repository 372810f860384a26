//! The consumer under faults no emulator makes: a stalled lease table.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::{
    Endpoints, FaultCounts, FaultProxy, Faults, LocalAws, resources, unique_name,
};
use kcl::lease::LeaseTable;
use kcl::processor::*;
use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, Scheduler, ShutdownHandle};
use kcl::timeouts::ApiTimeouts;
use kpl::{Producer, UserRecord};

/// `(worker, shard, data, when)` of every delivery.
type Deliveries = Arc<Mutex<Vec<(String, String, String, Instant)>>>;

struct Recorder {
    worker: String,
    shard: String,
    seen: Deliveries,
}

impl RecordProcessor for Recorder {
    async fn initialize(&mut self, _input: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        {
            let now = Instant::now();
            let mut seen = self.seen.lock().expect("lock");
            for record in &input.records {
                seen.push((
                    self.worker.clone(),
                    self.shard.clone(),
                    String::from_utf8_lossy(&record.data).into_owned(),
                    now,
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

fn start(
    sdk_config: &aws_config::SdkConfig,
    app: &str,
    stream: &str,
    worker: &str,
    seen: &Deliveries,
) -> (ShutdownHandle, tokio::task::JoinHandle<()>) {
    let mut config = ConsumerConfig::new(app, stream, worker);
    config.initial_position = StartingPosition::TrimHorizon;
    config.failover_time = Duration::from_secs(3);
    config.idle_time_between_reads = Duration::from_millis(100);
    config.shard_sync_interval = Duration::from_secs(1);
    config.release_cooldown = Duration::from_secs(1);
    config.shutdown_timeout = Duration::from_secs(3);
    config.dynamodb_timeouts = ApiTimeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(1),
        operation: Duration::from_secs(2),
    };
    let (worker, seen) = (worker.to_owned(), seen.clone());
    let scheduler = Scheduler::new(sdk_config, config, move |shard: &str| Recorder {
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

/// Leases held per worker.
async fn holders(table: &LeaseTable) -> HashMap<String, usize> {
    let mut held = HashMap::new();
    // Until a worker has created the table, nobody holds anything.
    for lease in table.list_leases().await.unwrap_or_default() {
        if let Some(owner) = lease.lease_owner {
            *held.entry(owner).or_insert(0) += 1;
        }
    }
    held
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    table: &LeaseTable,
    check: impl Fn(&HashMap<String, usize>) -> bool,
) {
    let started = Instant::now();
    loop {
        let held = holders(table).await;
        if check(&held) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {what}: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One of two workers loses its lease table (the endpoint accepts and never
/// answers): its processors stop before the other worker takes its leases,
/// so no shard is delivered by both at once; the other worker goes on with
/// every shard; after the stall the first rejoins; its graceful shutdown
/// during a stall ends within `shutdown_timeout` (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_lease_table_stalls_stops_before_its_leases_are_taken() {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let stream = unique_name("stall");
    resources::create_stream(&kinesis, &stream, 4)
        .await
        .expect("stream");
    let app = unique_name("app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let proxy = FaultProxy::start(&aws.endpoints().dynamodb, Faults::default())
        .await
        .expect("proxy");
    let stalled_endpoints = Endpoints {
        dynamodb: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    };

    // A producer that keeps writing until told to stop.
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let (stop_producing, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0usize;
            while !*stopped.borrow() {
                let mut pending = Vec::new();
                for _ in 0..20 {
                    let data = format!("r{i:06}");
                    i += 1;
                    let record = UserRecord::new(&stream, format!("k{}", i % 97), data.clone());
                    pending.push(producer.add_user_record(record).await.expect("accepted"));
                    sent.push(data);
                }
                for result in pending {
                    result.await.expect("stored");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => {}
                }
            }
            producer.shutdown().await.expect("producer shutdown");
            sent
        })
    };

    let seen: Deliveries = Arc::default();
    let (a, a_task) = start(
        &stalled_endpoints.sdk_config(),
        &app,
        &stream,
        "worker-a",
        &seen,
    );
    let (b, b_task) = start(aws.sdk_config(), &app, &stream, "worker-b", &seen);
    wait_for("2 leases each", Duration::from_secs(30), &table, |held| {
        held.get("worker-a") == Some(&2) && held.get("worker-b") == Some(&2)
    })
    .await;

    let stall_at = Instant::now();
    proxy.stall_every_call(true);
    wait_for(
        "worker-b to hold every lease",
        Duration::from_secs(20),
        &table,
        |held| held.get("worker-b") == Some(&4),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.stall_every_call(false);
    let unstall_at = Instant::now();
    wait_for(
        "worker-a to rejoin",
        Duration::from_secs(20),
        &table,
        |held| held.get("worker-a").is_some_and(|n| *n >= 1),
    )
    .await;

    let _ = stop_producing.send(true);
    let sent = writer.await.expect("writer");
    let started = Instant::now();
    loop {
        let got: HashSet<String> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.2.clone())
            .collect();
        if sent.iter().all(|d| got.contains(d)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {} records never delivered",
            sent.iter().filter(|d| !got.contains(*d)).count(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A graceful shutdown while the table stalls ends within its timeout.
    proxy.stall_every_call(true);
    let shutting = Instant::now();
    a.graceful().await;
    a_task.await.expect("worker-a");
    let took = shutting.elapsed();
    proxy.stall_every_call(false);
    b.graceful().await;
    b_task.await.expect("worker-b");
    assert!(
        took < Duration::from_secs(5),
        "worker-a's shutdown took {took:?}"
    );

    // No shard delivered by both workers at once: on every shard worker-b
    // took over during the stall, worker-a's last delivery came before
    // worker-b's first one.
    let seen = seen.lock().expect("lock").clone();
    let mut handed_over = 0;
    for shard in seen.iter().map(|s| s.1.clone()).collect::<HashSet<_>>() {
        let during = |worker: &str| {
            seen.iter()
                .filter(|s| s.0 == worker && s.1 == shard && s.3 >= stall_at && s.3 < unstall_at)
                .map(|s| s.3)
                .collect::<Vec<_>>()
        };
        let (by_a, by_b) = (during("worker-a"), during("worker-b"));
        let Some(first_b) = by_b.iter().min() else {
            continue;
        };
        // worker-a had the shard before worker-b (some shards move to a
        // just as the stall begins).
        let took_over = !by_a.is_empty()
            || seen
                .iter()
                .any(|s| s.0 == "worker-a" && s.1 == shard && s.3 < stall_at);
        if !took_over {
            continue;
        }
        handed_over += 1;
        // Only take-overs of expired leases are fencing's to protect: no
        // lease of worker-a's expires before 2 s into the stall (its last
        // renewal was at most 1 s before it, failover 3 s). A shard moving
        // earlier was still being balanced (stolen), where both workers may
        // deliver until the loser's next renewal — the window every KCL has.
        if first_b.duration_since(stall_at) < Duration::from_secs(2) {
            continue;
        }
        if let Some(last_a) = by_a.iter().max() {
            assert!(
                last_a < first_b,
                "{shard}: worker-a delivered {:?} after worker-b started",
                last_a.duration_since(*first_b)
            );
        }
    }
    assert!(
        handed_over >= 1,
        "worker-a's shards went to worker-b during the stall"
    );
    let duplicates = seen.len() - seen.iter().map(|s| &s.2).collect::<HashSet<_>>().len();
    eprintln!(
        "{} records, {} deliveries ({duplicates} again after a lease move), {handed_over} shards handed over",
        sent.len(),
        seen.len()
    );
    resources::delete_stream(&kinesis, &stream)
        .await
        .expect("cleanup");
}

/// Panics on its first batch while its shard has had fewer than three
/// processors.
struct Fragile {
    attempt: usize,
    seen: Deliveries,
    shard: String,
}

impl RecordProcessor for Fragile {
    async fn initialize(&mut self, _input: InitializationInput) {}
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if self.attempt < 3 && !input.records.is_empty() {
            panic!("a poison batch (attempt {})", self.attempt);
        }
        {
            let now = Instant::now();
            let mut seen = self.seen.lock().expect("lock");
            for record in &input.records {
                seen.push((
                    String::new(),
                    self.shard.clone(),
                    String::from_utf8_lossy(&record.data).into_owned(),
                    now,
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

/// A processor that panics on a batch is not restarted in a hot loop: its
/// lease is released and retried from the checkpoint after a cooldown that
/// doubles with each panic; once it stops panicking, every record is
/// processed (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_processor_is_retried_with_a_growing_pause() {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let stream = unique_name("poison");
    resources::create_stream(&kinesis, &stream, 1)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(
            producer
                .add_user_record(UserRecord::new(&stream, format!("k{i}"), format!("p{i}")))
                .await
                .expect("accepted"),
        );
    }
    for result in pending {
        result.await.expect("stored");
    }
    producer.shutdown().await.expect("producer shutdown");

    let seen: Deliveries = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut config = ConsumerConfig::new(unique_name("app"), &stream, "worker-1");
    config.initial_position = StartingPosition::TrimHorizon;
    config.failover_time = Duration::from_secs(3);
    config.idle_time_between_reads = Duration::from_millis(100);
    config.release_cooldown = Duration::from_millis(500);
    let scheduler = {
        let (seen, attempts) = (seen.clone(), attempts.clone());
        Scheduler::new(aws.sdk_config(), config, move |shard: &str| Fragile {
            attempt: attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
            seen: seen.clone(),
            shard: shard.to_owned(),
        })
    };
    let handle = scheduler.shutdown_handle();
    let started = Instant::now();
    let task = tokio::spawn(scheduler.run());
    while seen.lock().expect("lock").len() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not every record processed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    handle.graceful().await;
    task.await.expect("join").expect("scheduler");
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "a processor per attempt"
    );
    // Paused 0.5 s, then 1 s, between the attempts: no hot loop.
    assert!(
        took >= Duration::from_millis(1_500),
        "retried after {took:?}"
    );
    let data: HashSet<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.2.clone())
        .collect();
    assert_eq!(data.len(), 50);
}

/// A stream deleted under a running worker: reads fail with an error no
/// retry fixes (ResourceNotFound), so after a few attempts the shard's
/// processor stops and its lease is released, not held silently (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_releases_its_leases() {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let stream = unique_name("deleted");
    resources::create_stream(&kinesis, &stream, 1)
        .await
        .expect("stream");
    let app = unique_name("app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let seen: Deliveries = Arc::default();
    let (handle, task) = start(aws.sdk_config(), &app, &stream, "worker-1", &seen);
    wait_for("the lease taken", Duration::from_secs(20), &table, |held| {
        held.get("worker-1") == Some(&1)
    })
    .await;
    kinesis
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .expect("DeleteStream");
    wait_for(
        "the lease released",
        Duration::from_secs(20),
        &table,
        |held| held.is_empty(),
    )
    .await;
    handle.graceful().await;
    task.await.expect("worker");
}

/// The lease table deleted under a running worker is an error no retry
/// fixes (ResourceNotFound): the worker does not re-create it (every
/// checkpoint went with it, and shards would start over) nor retry in
/// silence: after a few passes `run` returns the error, saying what to fix
/// (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_table_stops_the_worker_with_the_error() {
    let aws = LocalAws::start().await.expect("local AWS");
    let kinesis = aws.kinesis_client();
    let stream = unique_name("table-gone");
    resources::create_stream(&kinesis, &stream, 1)
        .await
        .expect("stream");
    let app = unique_name("app");
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    let mut config = ConsumerConfig::new(&app, &stream, "worker-1");
    config.failover_time = Duration::from_millis(900);
    config.idle_time_between_reads = Duration::from_millis(100);
    config.shutdown_timeout = Duration::from_secs(2);
    config.lease_table_error_grace = Duration::from_secs(2);
    let scheduler = Scheduler::new(aws.sdk_config(), config, |_: &str| Recorder {
        worker: "worker-1".into(),
        shard: String::new(),
        seen: Deliveries::default(),
    });
    let task = tokio::spawn(scheduler.run());
    wait_for("the lease taken", Duration::from_secs(20), &table, |held| {
        held.get("worker-1") == Some(&1)
    })
    .await;
    resources::delete_table(&aws.dynamodb_client(), &app)
        .await
        .expect("DeleteTable");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the worker stops within 30 s")
        .expect("join");
    let error = result.expect_err("the worker reports the lost table");
    let kcl::scheduler::ConsumerError::Lease(lease_error) = &error else {
        panic!("{error}");
    };
    assert!(
        lease_error
            .permanent()
            .is_some_and(|fix| fix.contains("the lease table does not exist")),
        "{error}"
    );
    assert!(error.to_string().contains("ResourceNotFound"), "{error}");
    eprintln!(
        "stopped {:?} after the table was deleted: {error}",
        started.elapsed()
    );
    // Not re-created behind the operator's back.
    assert!(
        aws.dynamodb_client()
            .describe_table()
            .table_name(&app)
            .send()
            .await
            .is_err()
    );
    aws.shutdown().await;
}

/// At start, lease-table errors a retry may fix (5xx) are retried with
/// warnings until the table answers; access denied is returned at once,
/// with what to grant (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_table_errors_at_start_are_retried_or_reported() {
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("start");
    resources::create_stream(&aws.kinesis_client(), &stream, 1)
        .await
        .expect("stream");
    let proxy = FaultProxy::start(
        &aws.endpoints().dynamodb,
        Faults {
            every_call: true,
            fail: 1.0,
            ..Faults::default()
        },
    )
    .await
    .expect("proxy");
    let behind_proxy = Endpoints {
        dynamodb: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    }
    .sdk_config();
    let worker = |app: &str| {
        let mut config = ConsumerConfig::new(app, &stream, "worker-1");
        config.failover_time = Duration::from_secs(1);
        config.shutdown_timeout = Duration::from_secs(2);
        let scheduler = Scheduler::new(&behind_proxy, config, |_: &str| Recorder {
            worker: "worker-1".into(),
            shard: String::new(),
            seen: Deliveries::default(),
        });
        let handle = scheduler.shutdown_handle();
        (handle, tokio::spawn(scheduler.run()))
    };

    // 5xx for two seconds: retried, then the worker runs and takes the lease.
    let app = unique_name("app");
    let (handle, task) = worker(&app);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!task.is_finished(), "a 5xx at start is retried");
    proxy.set_faults(Faults::default());
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    wait_for("the lease taken", Duration::from_secs(30), &table, |held| {
        held.get("worker-1") == Some(&1)
    })
    .await;
    handle.graceful().await;
    task.await.expect("join").expect("a clean stop");

    // Access denied: reported at once, with the fix.
    proxy.set_faults(Faults {
        every_call: true,
        deny: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    let (_handle, task) = worker(&unique_name("denied"));
    let error = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("no retry in silence")
        .expect("join")
        .expect_err("access denied is an error");
    let kcl::scheduler::ConsumerError::Lease(lease_error) = &error else {
        panic!("{error}");
    };
    assert!(
        lease_error
            .permanent()
            .is_some_and(|fix| fix.contains("dynamodb:DescribeTable")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    aws.shutdown().await;
}

/// Enhanced fan-out under faults: SubscribeToShard answered 500 or
/// LimitExceeded, and subscriptions cut after their first event (a lost
/// connection), on top of 5xx and throttling of the other Kinesis calls:
/// the reader subscribes again from its continuation sequence number, and
/// every record is delivered once (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_under_faults_delivers_every_record_once() {
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("efo-faults");
    resources::create_stream(&aws.kinesis_client(), &stream, 2)
        .await
        .expect("stream");
    let proxy = FaultProxy::start(&aws.endpoints().kinesis, Faults::default())
        .await
        .expect("proxy");
    let behind_proxy = Endpoints {
        kinesis: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    }
    .sdk_config();
    let app = unique_name("app");
    let mut config = ConsumerConfig::new(&app, &stream, "worker-1");
    config.initial_position = StartingPosition::TrimHorizon;
    config.retrieval = kcl::scheduler::RetrievalMode::FanOut {
        consumer_name: app.clone(),
    };
    config.failover_time = Duration::from_secs(3);
    config.shard_sync_interval = Duration::from_secs(1);
    config.shutdown_timeout = Duration::from_secs(3);
    let seen: Deliveries = Arc::default();
    let recorded = seen.clone();
    let scheduler = Scheduler::new(&behind_proxy, config, move |shard: &str| Recorder {
        worker: "worker-1".into(),
        shard: shard.to_owned(),
        seen: recorded.clone(),
    });
    let handle = scheduler.shutdown_handle();
    let task = tokio::spawn(scheduler.run());
    let table = LeaseTable::new(aws.dynamodb_client(), &app);
    wait_for(
        "both leases taken",
        Duration::from_secs(30),
        &table,
        |held| held.get("worker-1") == Some(&2),
    )
    .await;
    proxy.set_faults(Faults {
        every_call: true,
        fail: 0.1,
        throttle: 0.1,
        drop_response: 0.3,
        ..Faults::default()
    });
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut sent = HashSet::new();
    for round in 0..10 {
        let mut pending = Vec::new();
        for i in 0..200 {
            let data = format!("r{round:02}-{i:04}");
            let record = UserRecord::new(&stream, format!("k{}", i % 31), data.clone());
            pending.push(producer.add_user_record(record).await.expect("accepted"));
            sent.insert(data);
        }
        for result in pending {
            result.await.expect("stored");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    producer.shutdown().await.expect("producer shutdown");
    let started = Instant::now();
    loop {
        let delivered: HashSet<String> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, _, data, _)| data.clone())
            .collect();
        if delivered.len() >= sent.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} records delivered",
            delivered.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.graceful().await;
    task.await.expect("join").expect("worker");
    let deliveries = seen.lock().expect("lock").clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, _, data, _) in &deliveries {
        *counts.entry(data.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), sent.len(), "every record");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "one worker, no lease move: no repeat; {repeated:?}"
    );
    let cut = FaultCounts::get(&proxy.counts().dropped_responses);
    let failed =
        FaultCounts::get(&proxy.counts().failed) + FaultCounts::get(&proxy.counts().throttled);
    eprintln!(
        "{} records, {cut} subscriptions cut, {failed} calls failed or throttled",
        sent.len()
    );
    assert!(
        cut > 0 && failed > 0,
        "faults were injected: {cut} cut, {failed} failed"
    );
    aws.shutdown().await;
}
