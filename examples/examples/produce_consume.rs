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
    let results = examples::produce_orders(sdk_config, stream, RECORDS).await?;
    let mut per_shard: BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for result in results {
        let shard = per_shard.entry(result.shard_id).or_default();
        shard.0 += 1;
        shard.1.insert(result.sequence_number);
    }
    for (shard, (records, sequence_numbers)) in &per_shard {
        println!(
            "Produced {records} user records into {shard} in {} Kinesis records",
            sequence_numbers.len()
        );
    }

    let stored = integration_tests::resources::read_stream(kinesis, stream).await?;
    let mut per_shard: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for record in &stored {
        per_shard.entry(&record.shard_id).or_default().push(record);
    }
    for (shard, records) in &per_shard {
        println!(
            "Consumed {} user records from {shard}, for example:",
            records.len()
        );
        for record in records.iter().take(2) {
            println!(
                "  {} sub {} key {}: {}",
                record.sequence_number,
                record.record.sub_sequence_number,
                record.record.partition_key,
                String::from_utf8_lossy(&record.record.data)
            );
        }
    }
    let total = stored.len();
    anyhow::ensure!(total == RECORDS, "consumed {total} of {RECORDS} records");
    println!("All {RECORDS} records came back.");
    Ok(())
}
