//! A stalled endpoint: the producer pushes back at its bound, its memory stays
//! flat, and everything drains once the endpoint answers again. In a test
//! binary of its own so that the resident set size is the producer's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::{Endpoints, FaultProxy, Faults, LocalAws, resources, unique_name};
use kpl::{Producer, ProducerConfig, UserRecord};

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_endpoint_stalled_add_waits_at_the_bound_memory_stays_flat_and_everything_drains_after()
 {
    const RECORDS: usize = 12_000;
    const RECORD_SIZE: usize = 4_096;
    const BOUND_BYTES: usize = 8 << 20;
    let aws = LocalAws::start().await.expect("local AWS");
    let stream = unique_name("stall");
    resources::create_stream(&aws.kinesis_client(), &stream, 2)
        .await
        .expect("stream");
    let proxy = FaultProxy::start(&aws.endpoints().kinesis, Faults::default())
        .await
        .expect("proxy");
    let endpoints = Endpoints {
        kinesis: proxy.url().to_owned(),
        ..aws.endpoints().clone()
    };
    let producer = Producer::builder()
        .sdk_config(&endpoints.sdk_config())
        .config(ProducerConfig {
            max_outstanding_bytes: BOUND_BYTES,
            record_ttl: Duration::from_secs(120),
            request_timeout: Duration::from_secs(1),
            retry_max_delay: Duration::from_millis(500),
            ..Default::default()
        })
        .build()
        .expect("producer");

    proxy.stall(true);
    let added = Arc::new(AtomicUsize::new(0));
    let producing = tokio::spawn({
        let producer = producer.clone();
        let added = added.clone();
        let stream = stream.clone();
        async move {
            let mut pending = Vec::with_capacity(RECORDS);
            for id in 0..RECORDS {
                let mut data = format!("{id:08}").into_bytes();
                data.resize(RECORD_SIZE, b'.');
                let record = UserRecord::new(&stream, format!("pk-{}", id % 64), data);
                pending.push(producer.add_user_record(record).await.expect("accepted"));
                added.fetch_add(1, Ordering::Relaxed);
            }
            pending
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (added_before, rss_before) = (added.load(Ordering::Relaxed), rss());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (added_after, rss_after) = (added.load(Ordering::Relaxed), rss());
    let bound_records = BOUND_BYTES / (RECORD_SIZE + 6);
    assert!(
        added_before <= bound_records + 1 && added_after == added_before,
        "add_user_record waits at the bound: {added_before} then {added_after} accepted, bound {bound_records}"
    );
    assert!(producer.outstanding_records() >= bound_records - 1);
    assert!(
        proxy.counts().stalled.load(Ordering::Relaxed) > 0,
        "requests reached the stalled endpoint"
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 16 << 20,
        "resident memory grew by {growth} bytes while stalled"
    );

    proxy.stall(false);
    let pending = tokio::time::timeout(Duration::from_secs(60), producing)
        .await
        .expect("every add completes after the stall")
        .expect("producing task");
    for (id, result) in futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|e| panic!("record {id}: {e}"));
    }
    producer.shutdown().await.expect("shutdown");
    let stored = resources::read_stream(&aws.kinesis_client(), &stream)
        .await
        .expect("read back");
    assert_eq!(stored.len(), RECORDS, "everything drained, once");
}
