//! `connector-s3 replay` against an archive spanning several hours, on the
//! embedded back ends.
//!
//! The archive is written in the connector's format and key layout from
//! records really read from a stream, with their arrival times spread over six
//! simulated hours (a real run would need six real hours).

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use connector_s3::compress::Compression;
use connector_s3::key::{DEFAULT_TEMPLATE, KeyFields, KeyTemplate};
use connector_s3::transform::{JsonLines, JsonRecord, RecordContext, Transformer};
use integration_tests::{LocalAws, resources, unique_name};
use kcl::retrieval::ConsumerRecord;
use kpl::{Producer, UserRecord};

const RECORDS: usize = 3_000;
const PREFIX: &str = "archive";

fn base() -> DateTime<Utc> {
    "2026-01-20T00:00:00Z".parse().expect("time")
}

/// Record `i` arrives `i * 6 h / RECORDS` after the base time.
fn arrival(i: usize) -> SystemTime {
    SystemTime::from(base()) + Duration::from_secs((i as u64 * 6 * 3_600) / RECORDS as u64)
}

struct Archive {
    aws: LocalAws,
    bucket: String,
    source: String,
    /// Every archived line, with the record it holds.
    lines: Vec<(String, JsonRecord)>,
    /// Keys of the objects, by hour.
    keys_by_hour: BTreeMap<u32, Vec<String>>,
    corrupt_key: String,
}

async fn build_archive() -> Archive {
    let aws = LocalAws::start().await.expect("local AWS");
    let (source, bucket) = resources::stream_and_bucket(aws.sdk_config(), 2)
        .await
        .expect("stream and bucket");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .streams([source.clone()])
        .build()
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let color = ["red", "green", "blue"][i % 3];
        let data = format!(r#"{{"n":{i},"color":"{color}"}}"#);
        pending.push(
            producer
                .add_user_record(UserRecord::new(&source, format!("pk-{}", i % 17), data))
                .await
                .expect("accepted"),
        );
    }
    for result in pending {
        result.await.expect("stored");
    }
    let stored = resources::read_stream(&aws.kinesis_client(), &source)
        .await
        .expect("read back");
    assert_eq!(stored.len(), RECORDS);

    // Objects per (shard, hour) as the connector would cut them, with
    // arrival times from the simulated clock (record order = production order).
    let mut by_shard: BTreeMap<String, Vec<ConsumerRecord>> = BTreeMap::new();
    for stored in stored {
        let n: usize = serde_json::from_slice::<serde_json::Value>(&stored.record.data)
            .expect("json")["n"]
            .as_u64()
            .expect("n") as usize;
        by_shard
            .entry(stored.shard_id.clone())
            .or_default()
            .push(ConsumerRecord {
                sequence_number: stored.sequence_number,
                sub_sequence_number: stored.record.sub_sequence_number,
                aggregated: stored.record.aggregated,
                partition_key: stored.record.partition_key,
                explicit_hash_key: stored.record.explicit_hash_key,
                data: stored.record.data,
                approximate_arrival: Some(arrival(n)),
            });
    }
    let template = KeyTemplate::new(PREFIX, DEFAULT_TEMPLATE).expect("template");
    let mut lines = Vec::new();
    let mut keys_by_hour: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (shard, mut records) in by_shard {
        records.sort_by_key(|r| r.approximate_arrival);
        let mut groups: BTreeMap<u64, Vec<ConsumerRecord>> = BTreeMap::new();
        for record in records {
            let hour = record
                .approximate_arrival
                .and_then(|t| t.duration_since(SystemTime::from(base())).ok())
                .map_or(0, |d| d.as_secs() / 3_600);
            groups.entry(hour).or_default().push(record);
        }
        for (hour, records) in groups {
            for chunk in records.chunks(200) {
                let context = RecordContext {
                    stream: &source,
                    shard_id: &shard,
                };
                let mut body = Vec::new();
                for batch in chunk.chunks(50) {
                    let mut raw = Vec::new();
                    for record in batch {
                        let start = raw.len();
                        JsonLines
                            .transform(&context, record, &mut raw)
                            .expect("transform");
                        let line =
                            String::from_utf8(raw[start..raw.len() - 1].to_vec()).expect("utf-8");
                        let parsed: JsonRecord = serde_json::from_str(&line).expect("json");
                        lines.push((line, parsed));
                    }
                    body.extend(Compression::GZIP.compress(&raw).expect("gzip"));
                }
                let first = &chunk[0];
                let key = template.render(&KeyFields {
                    time: first.approximate_arrival.expect("arrival").into(),
                    stream: &source,
                    shard: &shard,
                    first_seq: Some((&first.sequence_number, first.sub_sequence_number)),
                    ext: ".gz",
                    ..Default::default()
                });
                put(&aws, &bucket, &key, body).await;
                keys_by_hour.entry(hour as u32).or_default().push(key);
            }
        }
    }
    // A truncated object inside the window.
    let corrupt_key = template.render(&KeyFields {
        time: "2026-01-20T02:30:00Z".parse().expect("time"),
        stream: &source,
        shard: "shardId-000000000000",
        first_seq: Some(("1", 0)),
        ext: ".gz",
        ..Default::default()
    });
    let mut truncated = Compression::GZIP
        .compress(b"{\"not\":\"complete\"}\n")
        .expect("gzip");
    truncated.truncate(truncated.len() - 6);
    put(&aws, &bucket, &corrupt_key, truncated).await;
    Archive {
        aws,
        bucket,
        source,
        lines,
        keys_by_hour,
        corrupt_key,
    }
}

async fn put(aws: &LocalAws, bucket: &str, key: &str, body: Vec<u8>) {
    aws.s3_client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("put");
}

impl Archive {
    fn replay(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_connector-s3"));
        command
            .args(["replay", "--bucket", &self.bucket, "--prefix", PREFIX])
            .args(args)
            .envs(self.aws.endpoints().env_vars())
            .env("RUST_LOG", "warn");
        let output = command.output().expect("connector-s3 runs");
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        output
    }

    /// Lines of the window [02:00, 04:00) containing `text`.
    fn expected(&self, text: &str) -> Vec<&(String, JsonRecord)> {
        let from: DateTime<Utc> = "2026-01-20T02:00:00Z".parse().expect("time");
        let to: DateTime<Utc> = "2026-01-20T04:00:00Z".parse().expect("time");
        self.lines
            .iter()
            .filter(|(line, record)| {
                let arrival = record.arrival().expect("arrival");
                arrival >= from && arrival < to && line.contains(text)
            })
            .collect()
    }
}

const WINDOW: [&str; 4] = ["--from", "2026-01-20T02:00Z", "--to", "2026-01-20T04:00Z"];
const FILTER: &str = r#""color":"red""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_time_window_is_replayed_into_another_stream_with_its_keys() {
    let archive = build_archive().await;
    let target = unique_name("target");
    resources::create_stream(&archive.aws.kinesis_client(), &target, 3)
        .await
        .expect("target stream");

    let output =
        archive.replay(&[&WINDOW[..], &["--grep", FILTER, "--to-stream", &target]].concat());
    assert!(output.status.success());
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("1 failed objects"), "{summary}");
    assert!(
        summary.contains(&archive.corrupt_key),
        "the corrupt object is named: {summary}"
    );

    let mut expected: Vec<(String, Vec<u8>)> = archive
        .expected(FILTER)
        .iter()
        .map(|(_, r)| (r.partition_key.clone(), r.payload().expect("payload")))
        .collect();
    expected.sort();
    let red_in_window = (RECORDS / 3..RECORDS * 2 / 3)
        .filter(|i| i % 3 == 0)
        .count();
    assert_eq!(expected.len(), red_in_window, "two hours of red records");
    let mut replayed: Vec<(String, Vec<u8>)> =
        resources::read_stream(&archive.aws.kinesis_client(), &target)
            .await
            .expect("read target")
            .into_iter()
            .map(|s| (s.record.partition_key, s.record.data.to_vec()))
            .collect();
    replayed.sort();
    assert_eq!(
        replayed, expected,
        "the target holds exactly the window's matching records"
    );
    let _ = archive.source;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_equals_zcat_grep_and_strict_stops_at_a_corrupt_object() {
    let archive = build_archive().await;
    let output = archive.replay(&[&WINDOW[..], &["--grep", FILTER, "--output", "-"]].concat());
    assert!(output.status.success());
    let mut replayed: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    replayed.sort();

    // zcat | grep over the same objects (hours 02 and 03; the corrupt one
    // is reported by replay and left out here).
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for key in [2, 3].iter().flat_map(|h| &archive.keys_by_hour[h]) {
        let body = resources::get_object(&archive.aws.s3_client(), &archive.bucket, key)
            .await
            .expect("get");
        let file = dir.path().join(format!("{}.gz", files.len()));
        std::fs::write(&file, body).expect("write");
        files.push(file);
    }
    let zcat = Command::new("sh")
        .arg("-c")
        .arg(format!("zcat \"$@\" | grep -F '{FILTER}'"))
        .arg("sh")
        .args(&files)
        .output()
        .expect("zcat | grep");
    assert!(zcat.status.success());
    let mut grepped: Vec<String> = String::from_utf8(zcat.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    grepped.sort();
    assert!(!grepped.is_empty());
    assert_eq!(replayed, grepped);
    assert_eq!(replayed.len(), archive.expected(FILTER).len());

    // --dry-run counts the same; --strict stops at the corrupt object.
    let dry = archive.replay(&[&WINDOW[..], &["--grep", FILTER, "--dry-run"]].concat());
    assert!(dry.status.success());
    assert!(
        String::from_utf8_lossy(&dry.stderr).contains(&format!("{} matched", grepped.len())),
        "dry run counts"
    );
    let strict = archive.replay(&[&WINDOW[..], &["--dry-run", "--strict"]].concat());
    assert!(!strict.status.success());
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(
        stderr.contains(&archive.corrupt_key) && stderr.contains("replay stopped"),
        "{stderr}"
    );
}

/// Ctrl-C (SIGINT) stops a replay that cannot make progress, with a report
/// and a non-zero exit, instead of hanging or dying silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_stops_cleanly_with_a_report() {
    let archive = build_archive().await;
    // An S3 endpoint that accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", black_hole.local_addr().expect("addr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_connector-s3"))
        .args([
            "replay",
            "--bucket",
            &archive.bucket,
            "--prefix",
            PREFIX,
            "--dry-run",
        ])
        .args(WINDOW)
        .envs(archive.aws.endpoints().env_vars())
        .env("AWS_ENDPOINT_URL_S3", &url)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("connector-s3 runs");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replay ignored Ctrl-C");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(!status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
}
