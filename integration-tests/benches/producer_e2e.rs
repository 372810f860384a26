//! End-to-end producer throughput against the embedded Kinesis (ferrokinesis)
//! in the same process: 100-byte records into a 4-shard stream, from
//! `add_user_record` until every result has resolved.
//!
//! ```text
//! cargo bench -p integration-tests --bench producer_e2e
//! ```
//!
//! Two settings: the default rate limit (150 % of each shard's 1 MiB/s, so
//! the four shards cap the run near 6 MiB/s, as real Kinesis would), and the
//! limiter opened wide (the embedded Kinesis does not enforce limits here),
//! which measures the producer and the emulator. The emulator shares the
//! machine's two cores with the producer, so that figure is a floor for the
//! producer, not a ceiling.

use std::time::Instant;

use integration_tests::{LocalAws, resources, unique_name};
use kpl::{Producer, ProducerConfig, UserRecord};

const RECORDS: usize = 200_000;
const RUNS: usize = 5;

async fn run(aws: &LocalAws, config: ProducerConfig) -> f64 {
    let stream = unique_name("bench");
    resources::create_stream(&aws.kinesis_client(), &stream, 4)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .config(config)
        .build()
        .expect("producer");
    let records: Vec<UserRecord> = (0..RECORDS)
        .map(|i| {
            UserRecord::new(
                &stream,
                format!("partition-{}", i % 10_000),
                vec![b'x'; 100],
            )
        })
        .collect();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(RECORDS);
    for record in records {
        pending.push(producer.add_user_record(record).await.expect("accepted"));
    }
    for result in futures::future::join_all(pending).await {
        result.expect("stored");
    }
    let elapsed = started.elapsed();
    producer.shutdown().await.expect("shutdown");
    resources::delete_stream(&aws.kinesis_client(), &stream)
        .await
        .expect("delete");
    RECORDS as f64 / elapsed.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Nothing reads while the producer writes, so the emulator may take
        // writes concurrently (the tests serialise them for read order).
        let aws = LocalAws::start_with(integration_tests::embedded::LocalAwsOptions {
            ordered_writes: false,
            ..Default::default()
        })
        .await
        .expect("local AWS");
        let settings = [
            ("default rate limit (150 %)", ProducerConfig::default()),
            (
                "rate limiter opened",
                ProducerConfig { rate_limit: 1_000_000, ..Default::default() },
            ),
        ];
        for (name, config) in settings {
            let mut rates = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                rates.push(run(&aws, config.clone()).await);
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "producer end to end, embedded Kinesis, 100-byte records, 4 shards, {name}: median {:.0} user records/s (min {:.0}, max {:.0}, {RUNS} runs of {RECORDS})",
                rates[RUNS / 2],
                rates[0],
                rates[RUNS - 1]
            );
        }
    });
}
