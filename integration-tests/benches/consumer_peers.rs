//! `kcl` side by side with the Java KCL 2.7.2 (polling) and `kcl-rs` (PyPI:
//! another Rust port of the KCL, driven from Python), in one run: each
//! consumes the same 1,000,000 KPL-aggregated records (100 bytes, 10,000
//! partition keys, written by `kpl`) from a 4-shard stream with a processor
//! that only counts and checkpoints each batch, as a process of its own.
//! Reported per process tree: CPU (user + system, /proc) per million
//! records delivered, peak resident set, time from the process's start to
//! the first record and to the last.
//!
//! ```text
//! scripts/interop-java && scripts/peers          # the peers, once
//! cargo bench -p integration-tests --bench consumer_peers
//! ```
//!
//! Every consumer polls (kcl-rs's default is enhanced fan-out), 200 ms
//! between empty reads, shard sync every second, at most 10,000 records per
//! GetRecords, on a lease table whose leases are created up front (on an
//! empty table the Java KCL and kcl-rs first wait a random 1–30 s). kcl-rs
//! publishes CloudWatch metrics, which here fail harmlessly (its endpoint
//! is a closed port). The embedded back ends run in this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::java::{JavaInterop, Unavailable};
use integration_tests::proc_tree::{TreeSampler, TreeUsage};
use integration_tests::{LocalAws, resources, unique_name};
use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::lease::{Lease, LeaseTable};
use tokio::io::{AsyncBufReadExt, BufReader};

const RECORDS: u64 = 1_000_000;
const KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Run {
    usage: TreeUsage,
    first: f64,
    all: f64,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn produce(aws: &LocalAws, stream: &str) {
    let records = kpl::bench::codec::records(RECORDS as usize, KEYS, |_| 100);
    resources::put_all(
        aws.sdk_config(),
        stream,
        records.into_iter().map(|(k, d)| (k, d.to_vec())),
    )
    .await;
}

/// One free TRIM_HORIZON lease per shard in `app`'s table.
async fn seed_leases(aws: &LocalAws, stream: &str, app: &str) {
    let table = LeaseTable::new(aws.dynamodb_client(), app);
    table.create_if_missing().await.expect("lease table");
    let shards = aws
        .kinesis_client()
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("ListShards");
    for shard in shards.shards() {
        let mut lease = Lease::new(shard.shard_id(), ExtendedSequenceNumber::TRIM_HORIZON);
        lease.hash_key_range = shard.hash_key_range().map(|r| {
            (
                r.starting_hash_key().to_owned(),
                r.ending_hash_key().to_owned(),
            )
        });
        table.create_lease_if_absent(&lease).await.expect("lease");
    }
}

fn seconds(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Runs a consumer process until it prints its `drained` line and exits.
async fn measure(mut command: tokio::process::Command, name: &str) -> Option<Run> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| eprintln!("{name}: cannot start: {e}"))
        .ok()?;
    let sampler = TreeSampler::start(child.id()?, Duration::from_millis(20));
    let mut lines = BufReader::new(child.stdout.take()?).lines();
    let drained = tokio::time::timeout(Duration::from_secs(600), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                && value["event"] == "drained"
            {
                return Some(value);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    // Its graceful shutdown is part of what it costs.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(_)) = lines.next_line().await {}
        child.wait().await
    })
    .await;
    let usage = sampler.finish().await;
    let Some(drained) = drained else {
        eprintln!("{name}: did not deliver {RECORDS} records");
        return None;
    };
    Some(Run {
        usage,
        first: seconds(&drained["seconds_to_first"]),
        all: seconds(&drained["seconds_to_all"]),
    })
}

fn row(name: &str, run: &Run, ours: Option<&Run>) {
    let ratio = |theirs: f64, mine: f64| format!("{:.1}×", theirs / mine);
    println!(
        "| {name} | {:.2} s | {:.2} | {:.0} MiB | {:.2} s | {:.2} s | {} | {} |",
        run.usage.cpu.as_secs_f64(),
        run.usage.cpu.as_secs_f64() * 1e6 / RECORDS as f64,
        run.usage.peak_rss as f64 / f64::from(1 << 20),
        run.first,
        run.all,
        ours.map_or("—".into(), |o| ratio(
            run.usage.cpu.as_secs_f64(),
            o.usage.cpu.as_secs_f64()
        )),
        ours.map_or("—".into(), |o| ratio(
            run.usage.peak_rss as f64,
            o.usage.peak_rss as f64
        )),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let aws = LocalAws::start().await.expect("local AWS");
        let endpoints = aws.endpoints().clone();
        let stream = unique_name("consumer-peers");
        resources::create_stream(&aws.kinesis_client(), &stream, 4).await.expect("stream");
        produce(&aws, &stream).await;
        let aws_env = [
            ("AWS_ENDPOINT_URL_KINESIS", endpoints.kinesis.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", endpoints.dynamodb.clone()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH", "http://127.0.0.1:9".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ];
        let n = RECORDS.to_string();

        let app = unique_name("peers-kcl");
        seed_leases(&aws, &stream, &app).await;
        let mut ours = tokio::process::Command::new(env!("CARGO_BIN_EXE_kcl_count"));
        ours.args([stream.as_str(), app.as_str(), n.as_str(), "200"]).envs(aws_env.clone());
        let mine = measure(ours, "kcl").await;

        let java = match JavaInterop::find() {
            Ok(java) => Some(java),
            Err(Unavailable::ToolMissing(why) | Unavailable::NotBuilt(why)) => {
                eprintln!("the Java KCL is skipped: {why}");
                None
            }
        };
        let mut theirs = None;
        if let Some(java) = &java {
            let app = unique_name("peers-java");
            seed_leases(&aws, &stream, &app).await;
            let args: Vec<String> = [
                "--stream", &stream, "--app", &app, "--worker", "java-1", "--kinesis", &endpoints.kinesis,
                "--dynamodb", &endpoints.dynamodb, "--idle-ms", "200", "--failover-ms", "10000", "--count", &n,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            // The harness's JVM flags and classpath, as a plain process.
            let process = java.spawn("KclConsumer", "consumer-peers-java", &args).expect("java");
            let pid = process.id().expect("pid");
            let sampler = TreeSampler::start(pid, Duration::from_millis(20));
            let mut process = process;
            let drained = process.next_event("drained", Duration::from_secs(600)).await;
            let _ = process.wait(Duration::from_secs(60)).await;
            let usage = sampler.finish().await;
            theirs = drained.ok().map(|d| Run {
                usage,
                first: seconds(&d["seconds_to_first"]),
                all: seconds(&d["seconds_to_all"]),
            });
        }

        let kclrs_python = std::env::var_os("LOCAL_AWS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repository().join(".local-aws"))
            .join("multilang/kclrs-venv/bin/python");
        let app = unique_name("peers-kclrs");
        seed_leases(&aws, &stream, &app).await;
        let mut kclrs = tokio::process::Command::new(&kclrs_python);
        kclrs
            .arg(repository().join("integration-tests/python/kclrs_count.py"))
            .args([stream.as_str(), n.as_str(), "--app", app.as_str(), "--idle-ms", "200", "--shard-sync-ms", "1000"])
            .envs(aws_env.clone())
            .env("RUST_LOG", "error");
        let kclrs = measure(kclrs, "kcl-rs").await;

        println!("| consumer | CPU (user + sys) | CPU s per million records | peak RSS | start to first record | start to all {RECORDS} | CPU ÷ kcl's | RSS ÷ kcl's |");
        println!("|---|---|---|---|---|---|---|---|");
        if let Some(mine) = &mine {
            row("kcl", mine, None);
        }
        if let Some(theirs) = &theirs {
            row("Java KCL 2.7.2", theirs, mine.as_ref());
        }
        if let Some(kclrs) = &kclrs {
            row("kcl-rs 0.1.4", kclrs, mine.as_ref());
        }
    });
}
