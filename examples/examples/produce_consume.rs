//! Produce records with the `kpl` producer, read them back, deaggregate.
//!
//! ```text
//! cargo run -p examples --example produce_consume                 # embedded back ends
//! cargo run -p examples --example produce_consume -- --use-env    # real AWS / AWS_ENDPOINT_URL_*
//! ```
//!
//! The producer aggregates the records per predicted shard in the KPL format
//! and hands back, for each one, the shard and sequence number it was stored
//! under; the consumer side reads the shards with GetRecords and deaggregates.

use std::collections::BTreeMap;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kpl::aggregation::deaggregate;
use kpl::{Producer, UserRecord};

const RECORDS: usize = 2_000;
const SHARDS: i32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_tracing();
    let backend = examples::Backend::from_args().await?;
    println!("Using {}", backend.describe());
    let kinesis = aws_sdk_kinesis::Client::new(&backend.sdk_config);
    let stream = integration_tests::unique_name("example");
    integration_tests::resources::create_stream(&kinesis, &stream, SHARDS).await?;
    println!("Created stream {stream} with {SHARDS} shards");

    let result = run(&backend.sdk_config, &kinesis, &stream).await;
    integration_tests::resources::delete_stream(&kinesis, &stream).await?;
    result
}

async fn run(
    sdk_config: &aws_config::SdkConfig,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> anyhow::Result<()> {
    let producer = Producer::builder().sdk_config(sdk_config).build()?;
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let partition_key = format!("customer-{}", i % 97);
        let data = format!(
            r#"{{"order":{i},"customer":"{partition_key}","amount":{}}}"#,
            i * 7 % 500
        );
        // Waits only if the producer's buffer is full (backpressure).
        pending.push(
            producer
                .add_user_record(UserRecord::new(stream, partition_key, data))
                .await?,
        );
    }
    let mut per_shard: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for result in futures::future::join_all(pending).await {
        let result = result?;
        let shard = per_shard.entry(result.shard_id).or_default();
        shard.0 += 1;
        shard.1.insert(result.sequence_number);
    }
    producer.shutdown().await?;
    for (shard, (records, sequence_numbers)) in &per_shard {
        println!(
            "Produced {records} user records into {shard} in {} aggregated Kinesis records",
            sequence_numbers.len()
        );
    }

    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards()
        .to_vec();
    let mut total = 0;
    for shard in &shards {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        let mut in_shard = 0;
        let mut samples = Vec::new();
        while let Some(current) = iterator {
            let out = kinesis.get_records().shard_iterator(current).send().await?;
            for record in out.records() {
                let users = deaggregate(
                    record.partition_key().unwrap_or_default(),
                    None,
                    Bytes::copy_from_slice(record.data().as_ref()),
                );
                for user in users {
                    if samples.len() < 2 {
                        samples.push(format!(
                            "  {} sub {} key {}: {}",
                            record.sequence_number(),
                            user.sub_sequence_number,
                            user.partition_key,
                            String::from_utf8_lossy(&user.data)
                        ));
                    }
                    in_shard += 1;
                }
            }
            iterator = if out.records().is_empty() {
                None
            } else {
                out.next_shard_iterator
            };
        }
        println!("Consumed {in_shard} user records from {}", shard.shard_id());
        for sample in samples {
            println!("{sample}");
        }
        total += in_shard;
    }
    anyhow::ensure!(total == RECORDS, "consumed {total} of {RECORDS} records");
    println!("All {RECORDS} records came back.");
    Ok(())
}
