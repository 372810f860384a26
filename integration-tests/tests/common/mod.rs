//! Set-up shared by the tests that run the S3 connector in-process
//! (`mod common;` in each test file that needs it).
#![allow(dead_code)] // each test file uses a part of it

use std::path::Path;
use std::time::{Duration, Instant};

use connector_s3::connector::{S3Connector, S3ConnectorBuilder, StatsSnapshot};
use integration_tests::LocalAws;
use kpl::Producer;

/// A producer for `stream` on the embedded back ends.
pub fn producer(aws: &LocalAws, stream: &str) -> Producer {
    Producer::builder()
        .sdk_config(aws.sdk_config())
        .streams([stream.to_owned()])
        .build()
        .expect("producer")
}

/// A connector archiving `stream` under `bucket/prefix`, buffering in
/// `buffer`, with consumer timings short enough for tests (failover 2 s,
/// shard sync 1 s, 100 ms between idle reads).
pub fn connector(
    aws: &LocalAws,
    application: &str,
    stream: &str,
    bucket: &str,
    prefix: &str,
    buffer: &Path,
) -> S3ConnectorBuilder {
    S3Connector::builder()
        .sdk_config(aws.sdk_config())
        .application_name(application)
        .stream(stream)
        .bucket(bucket)
        .prefix(prefix)
        .buffer_dir(buffer)
        .consumer(|c| {
            c.failover_time = Duration::from_secs(2);
            c.shard_sync_interval = Duration::from_secs(1);
            c.idle_time_between_reads = Duration::from_millis(100);
        })
}

/// Runs `connector` until it has uploaded `records` records (failing after
/// `timeout`), stops it gracefully, and returns its final counters.
pub async fn run_until_uploaded(
    connector: S3Connector,
    records: u64,
    timeout: Duration,
) -> StatsSnapshot {
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let running = tokio::spawn(connector.run());
    let started = Instant::now();
    while stats.snapshot().records_uploaded < records {
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {records} records uploaded: {}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.graceful().await;
    running.await.expect("join").expect("connector");
    stats.snapshot()
}
