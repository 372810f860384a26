//! The main job: produce records with `kpl`, archive them to S3 with the
//! connector, list the archived objects and print a few of their lines.
//!
//! ```text
//! cargo run -p examples --example archive                 # embedded back ends
//! cargo run -p examples --example archive -- --use-env    # real AWS / AWS_ENDPOINT_URL_*
//! ```
//!
//! The connector runs in this process here; in production it is the
//! `connector-s3` binary (`connector-s3 run --config connector.toml`), one or
//! more processes sharing the stream's shards through the lease table.

use std::time::{Duration, Instant};

use connector_s3::compress::Compression;
use connector_s3::connector::S3Connector;

const RECORDS: usize = 10_000;
const SHARDS: i32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_tracing();
    let backend = examples::Backend::from_args().await?;
    println!("Using {}", backend.describe());
    let kinesis = aws_sdk_kinesis::Client::new(&backend.sdk_config);
    let s3 = match &backend.local {
        Some(local) => local.s3_client(),
        None => aws_sdk_s3::Client::new(&backend.sdk_config),
    };
    let stream = integration_tests::unique_name("orders");
    let bucket = integration_tests::unique_name("archive");
    integration_tests::resources::create_stream(&kinesis, &stream, SHARDS).await?;
    integration_tests::resources::create_bucket(&s3, &bucket).await?;
    println!("Created stream {stream} ({SHARDS} shards) and bucket {bucket}");

    let result = run(&backend.sdk_config, &s3, &stream, &bucket).await;
    integration_tests::resources::delete_stream(&kinesis, &stream).await?;
    integration_tests::resources::delete_bucket(&s3, &bucket).await?;
    result
}

async fn run(
    sdk_config: &aws_config::SdkConfig,
    s3: &aws_sdk_s3::Client,
    stream: &str,
    bucket: &str,
) -> anyhow::Result<()> {
    // 1. Produce.
    examples::produce_orders(sdk_config, stream, RECORDS).await?;
    println!("Produced {RECORDS} records");

    // 2. Archive.
    let buffer_dir = tempfile_dir()?;
    let connector = S3Connector::builder()
        .sdk_config(sdk_config)
        .s3_client(s3.clone())
        .application_name(integration_tests::unique_name("archiver"))
        .stream(stream)
        .bucket(bucket)
        .prefix("orders")
        .buffer_dir(&buffer_dir)
        .max_object_records(4_000)
        .max_object_age(Duration::from_secs(2))
        .consumer(|c| c.idle_time_between_reads = Duration::from_millis(250))
        .build()?;
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let running = tokio::spawn(connector.run());
    let started = Instant::now();
    while stats.snapshot().records_uploaded < RECORDS as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "archiving took too long: {}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.graceful().await;
    running.await??;
    println!("Archived: {}", stats.snapshot());
    let _ = std::fs::remove_dir_all(&buffer_dir);

    // 3. List the objects and show a few lines.
    let keys = integration_tests::resources::list_keys(s3, bucket, "orders/").await?;
    println!("{} objects in s3://{bucket}/orders/:", keys.len());
    for key in &keys {
        println!("  {key}");
    }
    if let Some(key) = keys.first() {
        let body = integration_tests::resources::get_object(s3, bucket, key).await?;
        let text = Compression::from_key(key).decompress_all(&body)?;
        println!("First lines of {key} (zcat):");
        for line in String::from_utf8_lossy(&text).lines().take(3) {
            println!("  {line}");
        }
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(integration_tests::unique_name("connector-buffer"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
