//! The producer through the fault-injecting proxy: failures, throttles,
//! partial failures and lost answers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use integration_tests::fault_proxy::FaultCounts;
use integration_tests::{Endpoints, FaultProxy, Faults, LocalAws, resources, unique_name};
use kpl::{Producer, ProducerConfig, RecordError, UserRecord};

struct Setup {
    aws: LocalAws,
    proxy: FaultProxy,
    stream: String,
    producer: Producer,
}

async fn setup(faults: Faults, config: ProducerConfig) -> Setup {
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("faults");
    resources::create_stream(&aws.kinesis_client(), &stream, 4)
        .await
        .expect("stream");
    let proxy = FaultProxy::start(&aws.endpoints().kinesis, faults)
        .await
        .expect("proxy");
    let endpoints = Endpoints {
        kinesis: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    };
    let producer = Producer::builder()
        .sdk_config(&endpoints.sdk_config())
        .config(config)
        .build()
        .expect("producer");
    Setup {
        aws,
        proxy,
        stream,
        producer,
    }
}

/// How many times each record id is stored in the stream.
async fn stored_ids(aws: &LocalAws, stream: &str) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for stored in resources::read_stream(&aws.kinesis_client(), stream)
        .await
        .expect("read back")
    {
        let id = std::str::from_utf8(&stored.record.data[..8])
            .expect("utf-8")
            .parse()
            .expect("id");
        *counts.entry(id).or_default() += 1;
    }
    counts
}

fn record(stream: &str, id: usize) -> UserRecord {
    let mut data = format!("{id:08}").into_bytes();
    data.resize(200, b'.');
    UserRecord::new(stream, format!("pk-{}", id % 500), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_twenty_percent_faults_every_record_is_stored_once_or_fails_typed_within_its_ttl() {
    const RECORDS: usize = 20_000;
    let ttl = Duration::from_secs(10);
    let faults = Faults {
        fail: 0.08,
        throttle: 0.06,
        partial: 0.06,
        drop_response: 0.0,
        ..Faults::default()
    };
    // Small aggregates and requests: many calls, so every fault shows up.
    let config = ProducerConfig {
        aggregation_max_size: 2_048,
        collection_max_count: 25,
        record_ttl: ttl,
        retry_min_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(500),
        ..Default::default()
    };
    let Setup {
        aws,
        proxy,
        stream,
        producer,
    } = setup(faults, config).await;

    let mut pending = Vec::with_capacity(RECORDS);
    for id in 0..RECORDS {
        let result = producer
            .add_user_record(record(&stream, id))
            .await
            .expect("accepted");
        pending.push((Instant::now(), result));
    }
    let mut delivered = HashSet::new();
    let mut retried = 0;
    for (id, (added, result)) in pending.into_iter().enumerate() {
        let outcome = result.await;
        assert!(
            added.elapsed() < ttl + Duration::from_secs(2),
            "record {id} resolved within its TTL"
        );
        match outcome {
            Ok(result) => {
                retried += usize::from(result.attempts.len() > 1);
                delivered.insert(id);
            }
            Err(RecordError::Expired { record, attempts }) => {
                assert!(!attempts.is_empty());
                assert_eq!(&record.data()[..8], format!("{id:08}").as_bytes());
            }
            Err(other) => panic!("record {id}: unexpected error {other}"),
        }
    }
    producer.shutdown().await.expect("shutdown");

    let counts = proxy.counts();
    assert!(FaultCounts::get(&counts.failed) > 0, "5xx injected");
    assert!(
        FaultCounts::get(&counts.throttled) > 0,
        "throttles injected"
    );
    assert!(
        FaultCounts::get(&counts.partial_records_refused) > 0,
        "partial failures injected"
    );
    assert!(retried > 0, "some records needed retries");

    let stored = stored_ids(&aws, &stream).await;
    for (id, times) in &stored {
        assert_eq!(*times, 1, "record {id} stored {times} times");
        assert!(
            delivered.contains(id),
            "record {id} stored although its result was an error"
        );
    }
    assert_eq!(
        stored.len(),
        delivered.len(),
        "every delivered record is stored"
    );
    assert!(
        delivered.len() > RECORDS * 99 / 100,
        "{} of {RECORDS} delivered",
        delivered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_the_only_source_of_duplicates() {
    const RECORDS: usize = 5_000;
    let faults = Faults {
        drop_response: 0.15,
        ..Default::default()
    };
    // Small aggregates and requests: many calls, so many lost answers.
    let config = ProducerConfig {
        aggregation_max_size: 2_048,
        collection_max_count: 5,
        retry_min_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let Setup {
        aws,
        proxy,
        stream,
        producer,
    } = setup(faults, config).await;
    let mut pending = Vec::with_capacity(RECORDS);
    for id in 0..RECORDS {
        pending.push(
            producer
                .add_user_record(record(&stream, id))
                .await
                .expect("accepted"),
        );
    }
    for (id, result) in futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|e| panic!("record {id}: {e}"));
    }
    producer.shutdown().await.expect("shutdown");

    let stored = stored_ids(&aws, &stream).await;
    assert_eq!(stored.len(), RECORDS, "every record stored");
    let duplicates: usize = stored.values().map(|times| times - 1).sum();
    let dropped = proxy.counts().dropped_user_records.load(Ordering::Relaxed) as usize;
    assert!(dropped > 0, "answers were dropped: {:?}", proxy.counts());
    assert!(
        duplicates > 0,
        "a lost answer leads to a retry, hence a duplicate"
    );
    assert!(
        duplicates <= dropped,
        "{duplicates} duplicates, but only {dropped} records were stored behind a lost answer"
    );
}

/// A stream's record limit, as DescribeStreamSummary reports it
/// (`MaxRecordSizeInKiB`), is what validation holds records to. The
/// embedded Kinesis accepts UpdateMaxRecordSize but never reports the value
/// (and keeps storing at most 1 MiB of data), so the proxy injects it into
/// the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_max_record_size_changes_what_validation_accepts() {
    use kpl::{AddError, ValidationError};
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("limits");
    resources::create_stream(&aws.kinesis_client(), &stream, 1)
        .await
        .expect("stream");
    let proxy = FaultProxy::start(&aws.endpoints().kinesis, Faults::default())
        .await
        .expect("proxy");
    proxy.rewrite_responses("DescribeStreamSummary", |answer| {
        answer["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] = 2_048.into();
    });
    let through_proxy = Endpoints {
        kinesis: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    };
    let raised = Producer::builder()
        .sdk_config(&through_proxy.sdk_config())
        .build()
        .expect("producer");
    let unraised = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let record = |size: usize| UserRecord::new(&stream, "pk", vec![0; size - 2]);
    let too_large = |result: Result<kpl::PendingResult, AddError>| match result {
        Err(AddError::Invalid(ValidationError::RecordTooLarge { max, .. })) => max,
        other => panic!("expected RecordTooLarge, got {other:?}"),
    };

    // Without the report: 1 MiB, as for every stream that was never raised.
    assert_eq!(
        too_large(unraised.add_user_record(record(1_572_864)).await),
        1_048_576
    );
    // With 2,048 KiB reported, 1.5 MiB is accepted (the stream's limits are
    // read before the first large record is judged) and 2.5 MiB is not.
    let accepted = raised
        .add_user_record(record(1_572_864))
        .await
        .expect("1.5 MiB accepted under a 2 MiB limit");
    assert_eq!(
        too_large(raised.add_user_record(record(2_621_440)).await),
        2_097_152
    );
    // The embedded Kinesis itself still stores at most 1 MiB of data.
    match accepted.await {
        Err(RecordError::Failed { code, .. }) => assert_eq!(code, "ValidationException"),
        other => panic!("the embedded Kinesis refuses over 1 MiB of data, got {other:?}"),
    }
    raised.shutdown().await.expect("shutdown");
    unraised.shutdown().await.expect("shutdown");
}
