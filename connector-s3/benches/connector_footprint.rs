//! The `connector-s3` binary as a process: CPU (user + system) per million
//! records archived and peak resident set, archiving 1,000,000 records
//! (100 bytes, KPL-aggregated, 4 shards) to the embedded S3, from start
//! until every record is archived, then its graceful shutdown.
//!
//! ```text
//! cargo bench -p connector-s3 --bench connector_footprint
//! ```
//!
//! The embedded Kinesis, DynamoDB and S3 run in this bench's process (their
//! CPU is not the connector's); the binary reaches them through the
//! standard `AWS_ENDPOINT_URL_*`. Settings: gzip-6 and zstd-3, fsync on,
//! objects of at most 100,000 records, the default read-ahead, 200 Kinesis
//! records (~10 MB) per GetRecords.

use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::proc_tree::TreeSampler;
use integration_tests::{LocalAws, resources, unique_name};

const RECORDS: u64 = 1_000_000;

async fn produce(aws: &LocalAws, stream: &str) {
    let records = (0..RECORDS).map(|i| {
        let data = format!(
            r#"{{"id":{i},"level":"info","msg":"request {:08x} served in {} ms"}}"#,
            i.wrapping_mul(2_654_435_761),
            i % 997
        );
        (format!("host-{}", i % 10_000), data.into_bytes())
    });
    resources::put_all(aws.sdk_config(), stream, records).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let aws = LocalAws::start().await.expect("local AWS");
        let (stream, bucket) = resources::stream_and_bucket(aws.sdk_config(), 4)
            .await
            .expect("stream and bucket");
        produce(&aws, &stream).await;
        println!("| compression | CPU (user + sys) | CPU s per million records archived | peak RSS | wall |");
        println!("|---|---|---|---|---|");
        for compression in ["gzip", "zstd"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let app = unique_name("footprint");
            let prefix = format!("footprint-{compression}");
            let started = Instant::now();
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_connector-s3"))
                .arg("run")
                .envs(aws.endpoints().env_vars())
                .env("RUST_LOG", "warn")
                .env("CONNECTOR_S3_APPLICATION_NAME", &app)
                .env("CONNECTOR_S3_STREAMS", &stream)
                .env("CONNECTOR_S3_BUCKET", &bucket)
                .env("CONNECTOR_S3_PREFIX", &prefix)
                .env("CONNECTOR_S3_BUFFER_DIR", dir.path())
                .env("CONNECTOR_S3_INITIAL_POSITION", "TRIM_HORIZON")
                .env("CONNECTOR_S3_COMPRESSION", compression)
                .env("CONNECTOR_S3_MAX_OBJECT_RECORDS", "100000")
                .env("CONNECTOR_S3_MAX_OBJECT_AGE_SECS", "2")
                .env("CONNECTOR_S3_IDLE_TIME_BETWEEN_READS_MS", "200")
                // 200 aggregates of ≤ 51,200 bytes: ~10 MB per GetRecords,
                // Kinesis's own bound, which the embedded Kinesis does not
                // apply (it would hand over a whole shard at once).
                .env("CONNECTOR_S3_MAX_RECORDS", "200")
                .env("CONNECTOR_S3_STATS_INTERVAL_SECS", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("connector-s3");
            let sampler = TreeSampler::start(child.id().expect("pid"), Duration::from_millis(20));
            let s3 = aws.s3_client();
            loop {
                let mut archived = 0u64;
                for key in resources::list_keys(&s3, &bucket, &prefix).await.unwrap_or_default() {
                    let body = resources::get_object(&s3, &bucket, &key).await.unwrap_or_default();
                    let text = connector_s3::compress::Compression::from_key(&key)
                        .decompress_all(&body)
                        .unwrap_or_default();
                    archived += text.iter().filter(|b| **b == b'\n').count() as u64;
                }
                if archived >= RECORDS {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(900), "{archived} archived");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let wall = started.elapsed();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().expect("pid").to_string()])
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
            let usage = sampler.finish().await;
            println!(
                "| {compression} | {:.2} s | {:.2} | {:.0} MiB | {:.1} s (polled every second) |",
                usage.cpu.as_secs_f64(),
                usage.cpu.as_secs_f64() * 1e6 / RECORDS as f64,
                usage.peak_rss as f64 / f64::from(1 << 20),
                wall.as_secs_f64()
            );
        }
    });
}
