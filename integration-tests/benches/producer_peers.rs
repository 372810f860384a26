//! `kpl` side by side with the AWS KPL (its Java wrapper and native daemon,
//! from Maven Central), in one run: each puts the same 1,000,000 user
//! records (100 bytes, 10,000 partition keys) into the same local Kinesis
//! (4 shards, rate limit opened, aggregation on), one after the other, as a
//! process of its own reading the records from stdin; then the same with
//! PutRecords stalled for 10 s halfway. Reported per process tree: CPU
//! (user + system, /proc), wall time, peak resident set.
//!
//! ```text
//! scripts/interop-java                          # the Java side, once
//! cargo bench -p integration-tests --bench producer_peers
//! ```
//!
//! The AWS KPL is `interop/java/kpl`'s `KplProducer --quiet true` (no line
//! per result; its native daemon speaks only TLS, so it goes through
//! `TlsFront`); ours is `src/bin/kpl_put.rs` (plain HTTP). Both reach the
//! embedded Kinesis through one `FaultProxy`, which makes the stall.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use integration_tests::java::{JavaInterop, Unavailable};
use integration_tests::proc_tree::{TreeSampler, TreeUsage};
use integration_tests::{FaultProxy, Faults, LocalAws, TlsFront, resources, unique_name};

const RECORDS: usize = 1_000_000;
const KEYS: usize = 10_000;
const STALL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Run {
    usage: TreeUsage,
    wall: Duration,
    ok: u64,
}

fn input(path: &Path) {
    let mut text = String::with_capacity(RECORDS * 160);
    for (key, data) in kpl::bench::codec::records(RECORDS, KEYS, |_| 100) {
        text.push_str(&B64.encode(key));
        text.push_str(" - ");
        text.push_str(&B64.encode(&data));
        text.push('\n');
    }
    std::fs::write(path, text).expect("input file");
}

/// Stalls PutRecords for [`STALL`] after the given time, if given.
async fn stall_for(stall: Option<(&FaultProxy, Duration)>) {
    if let Some((proxy, after)) = stall {
        tokio::time::sleep(after).await;
        proxy.stall(true);
        tokio::time::sleep(STALL).await;
        proxy.stall(false);
    }
}

async fn aws_kpl(
    java: &JavaInterop,
    front: &TlsFront,
    stream: &str,
    input: &Path,
    stall: Option<(&FaultProxy, Duration)>,
) -> Run {
    let host = front.host();
    let port = front.port().to_string();
    let mut args: Vec<String> = vec![
        "--stream".into(),
        stream.into(),
        "--warmup".into(),
        "true".into(),
        "--quiet".into(),
        "true".into(),
    ];
    for (key, value) in [
        ("KinesisEndpoint", host.as_str()),
        ("KinesisPort", port.as_str()),
        ("StsEndpoint", host.as_str()),
        ("StsPort", port.as_str()),
        ("CloudwatchEndpoint", host.as_str()),
        ("CloudwatchPort", port.as_str()),
        ("VerifyCertificate", "false"),
        ("MetricsLevel", "none"),
        ("RateLimit", "100000"),
    ] {
        args.push(format!("--kpl.{key}"));
        args.push(value.to_owned());
    }
    let started = Instant::now();
    let mut kpl = java
        .spawn("KplProducer", "producer-peers-kpl", &args)
        .expect("start the KPL");
    let sampler = TreeSampler::start(kpl.id().expect("pid"), Duration::from_millis(20));
    kpl.next_event("warmup", Duration::from_secs(120))
        .await
        .expect("KPL warm-up");
    let work = async {
        let bytes = std::fs::read(input).expect("input");
        for chunk in bytes.chunks(1 << 20) {
            kpl.write(chunk).await.expect("write to the KPL");
        }
        kpl.close_stdin();
        let done = kpl
            .next_event("done", Duration::from_secs(900))
            .await
            .expect("KPL done");
        let _ = kpl.wait(Duration::from_secs(60)).await;
        (done, started.elapsed())
    };
    let ((done, wall), ()) = tokio::join!(work, stall_for(stall));
    Run {
        usage: sampler.finish().await,
        wall,
        ok: done["ok"].as_u64().unwrap_or(0),
    }
}

async fn ours(
    endpoint: &str,
    stream: &str,
    input: &Path,
    stall: Option<(&FaultProxy, Duration)>,
) -> Run {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kpl_put"))
        .args([stream, "1000000"])
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::from(std::fs::File::open(input).expect("input")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("kpl_put");
    let sampler = TreeSampler::start(child.id().expect("pid"), Duration::from_millis(20));
    let work = async {
        let output = child.wait_with_output().await.expect("kpl_put");
        (output, started.elapsed())
    };
    let ((output, wall), ()) = tokio::join!(work, stall_for(stall));
    assert!(output.status.success(), "kpl_put failed");
    let done: serde_json::Value =
        serde_json::from_slice(output.stdout.trim_ascii()).expect("kpl_put's done line");
    Run {
        usage: sampler.finish().await,
        wall,
        ok: done["ok"].as_u64().unwrap_or(0),
    }
}

fn row(setting: &str, name: &str, run: &Run) {
    println!(
        "| {setting} | {name} | {:.2} s | {:.2} s | {:.2} | {:.0} MiB | {} |",
        run.usage.cpu.as_secs_f64(),
        run.wall.as_secs_f64(),
        run.usage.cpu.as_secs_f64() * 1e6 / RECORDS as f64,
        run.usage.peak_rss as f64 / f64::from(1 << 20),
        run.ok
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let java = match JavaInterop::find() {
            Ok(java) => java,
            Err(Unavailable::ToolMissing(why) | Unavailable::NotBuilt(why)) => {
                eprintln!("producer_peers needs the Java side: {why}");
                return;
            }
        };
        let aws = LocalAws::start_with(integration_tests::embedded::LocalAwsOptions {
            ordered_writes: false,
            ..Default::default()
        })
        .await
        .expect("local AWS");
        let proxy = FaultProxy::start(&aws.endpoints().kinesis, Faults::default())
            .await
            .expect("proxy");
        let front = TlsFront::start(proxy.url()).await.expect("TLS front");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.txt");
        input(&path);
        println!("| setting | producer | CPU (user + sys) | wall | CPU s per million records | peak RSS | records stored |");
        println!("|---|---|---|---|---|---|---|");
        let mut steady = Vec::new();
        for stalled in [false, true] {
            let setting = if stalled { "PutRecords stalled 10 s halfway" } else { "steady" };
            let stream = unique_name("producer-peers");
            resources::create_stream(&aws.kinesis_client(), &stream, 4).await.expect("stream");
            let kpl_stall = stalled.then(|| (&proxy, steady.first().map_or(Duration::from_secs(2), |r: &Run| r.wall / 2)));
            let theirs = aws_kpl(&java, &front, &stream, &path, kpl_stall).await;
            row(setting, "AWS KPL 1.0.7", &theirs);
            let stream = unique_name("producer-peers");
            resources::create_stream(&aws.kinesis_client(), &stream, 4).await.expect("stream");
            let our_stall = stalled.then(|| (&proxy, steady.get(1).map_or(Duration::from_secs(2), |r: &Run| r.wall / 2)));
            let mine = ours(proxy.url(), &stream, &path, our_stall).await;
            row(setting, "kpl", &mine);
            println!(
                "| {setting} | ratio (AWS KPL ÷ kpl) | {:.1}× | {:.1}× | | {:.1}× | |",
                theirs.usage.cpu.as_secs_f64() / mine.usage.cpu.as_secs_f64(),
                theirs.wall.as_secs_f64() / mine.wall.as_secs_f64(),
                theirs.usage.peak_rss as f64 / mine.usage.peak_rss as f64
            );
            if !stalled {
                steady = vec![theirs, mine];
            }
        }
    });
}
