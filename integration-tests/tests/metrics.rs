//! The metrics kpl, kcl and connector-s3 record through the `metrics`
//! facade, read back from a recorder installed for this test binary alone
//! (the recorder is process-global, hence one test in its own file).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::{LocalAws, resources, unique_name};
use kpl::UserRecord;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

mod common;

/// Counters and gauges by name and labels (`name{k=v,...}`); histograms
/// count their samples.
#[derive(Default)]
struct Recorded {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

struct Samples(Arc<AtomicU64>);

impl metrics::HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Relaxed);
    }
}

impl Recorded {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut name = key.name().to_owned();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        self.values
            .lock()
            .expect("lock")
            .entry(name)
            .or_default()
            .clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.values
            .lock()
            .expect("lock")
            .get(name)
            .map_or(0, |v| v.load(Relaxed))
    }

    fn gauge(&self, name: &str) -> Option<f64> {
        self.values
            .lock()
            .expect("lock")
            .get(name)
            .map(|v| f64::from_bits(v.load(Relaxed)))
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.values.lock().expect("lock").keys().cloned().collect();
        names.sort();
        names
    }
}

/// A `&'static` recorder that forwards to a shared [`Recorded`].
struct Handle(Arc<Recorded>);

impl Recorder for Handle {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.slot(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Samples(self.0.slot(key))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_consumer_and_connector_metrics_match_what_happened() {
    let recorded = Arc::new(Recorded::default());
    metrics::set_global_recorder(Handle(recorded.clone())).expect("the only recorder");

    let aws = LocalAws::start().await.expect("local AWS");
    let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 2)
        .await
        .expect("stream and bucket");

    // Producer.
    let producer = common::producer(&aws, &stream);
    let mut pending = Vec::new();
    for i in 0..5_000 {
        pending.push(
            producer
                .add_user_record(UserRecord::new(
                    &stream,
                    format!("pk-{i}"),
                    format!("record {i}"),
                ))
                .await
                .expect("accepted"),
        );
    }
    for result in pending {
        result.await.expect("stored");
    }
    producer.shutdown().await.expect("shutdown");
    assert_eq!(recorded.counter(kpl::metrics::USER_RECORDS_RECEIVED), 5_000);
    assert_eq!(recorded.counter(kpl::metrics::USER_RECORDS_PUT), 5_000);
    assert_eq!(recorded.counter(kpl::metrics::USER_RECORDS_FAILED), 0);
    let requests = recorded.counter(kpl::metrics::REQUESTS);
    let kinesis_records = recorded.counter(kpl::metrics::KINESIS_RECORDS_PUT);
    assert!(requests >= 1, "PutRecords calls: {requests}");
    // Aggregated: far fewer Kinesis records than user records.
    assert!(
        (1..5_000).contains(&kinesis_records),
        "Kinesis records: {kinesis_records}"
    );
    assert!(
        recorded.counter(kpl::metrics::BUFFERING_TIME) >= 1,
        "buffering samples"
    );
    assert_eq!(recorded.gauge(kpl::metrics::OUTSTANDING), Some(0.0));

    // Consumer and connector.
    let buffer = tempfile::tempdir().expect("tempdir");
    let app = unique_name("archiver");
    let connector = common::connector(&aws, &app, &stream, &bucket, "archive", buffer.path())
        .max_object_records(1_000)
        .max_object_age(Duration::from_secs(1))
        .build()
        .expect("connector");
    let snapshot = common::run_until_uploaded(connector, 5_000, Duration::from_secs(60)).await;

    assert_eq!(recorded.counter(kcl::metrics::RECORDS_PROCESSED), 5_000);
    assert_eq!(recorded.counter(kcl::metrics::LEASES_TAKEN), 2);
    assert_eq!(recorded.counter(kcl::metrics::LEASES_LOST), 0);
    // Each object: a prepared checkpoint and a checkpoint.
    assert!(
        recorded.counter(kcl::metrics::CHECKPOINTS) >= 2 * snapshot.objects_uploaded,
        "checkpoints {} for {} objects",
        recorded.counter(kcl::metrics::CHECKPOINTS),
        snapshot.objects_uploaded
    );
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let lag = format!("{}{{shard={shard}}}", kcl::metrics::BEHIND_LATEST);
        assert!(
            recorded.gauge(&lag).is_some(),
            "{lag} in {:?}",
            recorded.names()
        );
    }

    use connector_s3::metrics as m;
    assert_eq!(recorded.counter(m::RECORDS_IN), 5_000);
    assert_eq!(recorded.counter(m::RECORDS_FILTERED), 0);
    assert_eq!(recorded.counter(m::RECORDS_UPLOADED), 5_000);
    assert_eq!(
        recorded.counter(m::OBJECTS_UPLOADED),
        snapshot.objects_uploaded
    );
    assert_eq!(recorded.counter(m::BYTES_UPLOADED), snapshot.bytes_uploaded);
    assert_eq!(recorded.counter(m::UPLOAD_RETRIES), 0);
    assert_eq!(recorded.counter(m::QUARANTINED), 0);
    // Everything uploaded: nothing left buffered.
    assert_eq!(recorded.gauge(m::BUFFERED_BYTES), Some(0.0));
}
