//! `kcl-multilang` as a process, with real MultiLang record processors:
//! amazon-kclpy's own sample (Python), a processor on the npm package
//! aws-kcl (Node), and a protocol recorder run under both our daemon and
//! the Java MultiLangDaemon. Against the embedded back ends of the test
//! process; the packages come from `scripts/peers`, the Java
//! daemon from `scripts/interop-java` (both run by `scripts/test`).
//!
//! These live in this crate because only a package's own tests get its
//! binary's path (`CARGO_BIN_EXE_*`). They run one at a time (`SERIAL`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use integration_tests::java::{JavaInterop, Unavailable};
use integration_tests::{LocalAws, resources, unique_name};
use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::lease::LeaseTable;
use kpl::{Producer, UserRecord};
use serde_json::Value;
use tokio::process::{Child, Command};

mod support;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// amazon-kclpy's sample processor, imported unchanged, on a 4-shard
/// stream filled by `kpl`: every record reaches it once, and the
/// checkpoints its `shutdown_requested` makes are in the lease table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kclpy_sample_processes_every_record() {
    let _serial = SERIAL.lock().await;
    let Some(kclpy) = peers().kclpy() else { return };
    let setup = Setup::new(4).await;
    let records = setup.produce(0..1_500).await;
    let properties = setup.properties(
        &format!("python3 {}", processor("kclpy_sample.py").display()),
        &[],
    );
    let mut daemon = setup.daemon(&properties, &[("PYTHONPATH", kclpy.display().to_string())]);
    let seen = setup
        .wait_for_events(
            "kclpy-",
            |events| records_of(events).len() >= records.len(),
            &mut daemon,
        )
        .await;
    daemon.stop().await;

    let events = setup.events("kclpy-");
    let delivered = records_of(&events);
    assert_eq!(
        delivered.keys().cloned().collect::<BTreeSet<_>>(),
        records,
        "every record, each once"
    );
    assert!(seen, "all records seen before the stop");
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "one daemon, no lease moved: no duplicate");
    // Each shard: initialize at TRIM_HORIZON, records, shutdownRequested,
    // then leaseLost (the Java KCL 2.x's order), in one child.
    for shard in setup.shards().await {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["shard"] == shard.as_str() && e["event"] != "record")
            .map(|e| e["event"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            kinds,
            ["initialize", "shutdownRequested", "leaseLost"],
            "{shard}"
        );
    }
    // The checkpoints: the last record of each shard; the leases released.
    let checkpoints = setup.checkpoints().await;
    for (shard, last) in last_positions(&events) {
        assert_eq!(checkpoints[&shard], last, "{shard}");
    }
    assert!(
        setup.owners().await.iter().all(Option::is_none),
        "leases released at shutdown"
    );
    // The sample logs each record on its stderr: forwarded with the shard.
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("Record (Partition Key: key-") && l.contains("shard=shardId-")),
        "the child's stderr is in the daemon's log with its shard"
    );
    setup.finish().await;
}

/// A processor on the npm package aws-kcl: every record once; a daemon
/// restart resumes each shard at its checkpoint (records written while it
/// was down included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_kcl_node_processor_resumes_after_a_daemon_restart() {
    let _serial = SERIAL.lock().await;
    let Some(node_modules) = peers().node_modules() else {
        return;
    };
    let setup = Setup::new(4).await;
    let first = setup.produce(0..600).await;
    let properties = setup.properties(
        &format!("node {}", processor("node_consumer.js").display()),
        &[],
    );
    let env = [("NODE_PATH", node_modules.display().to_string())];
    let mut daemon = setup.daemon(&properties, &env);
    setup
        .wait_for_events(
            "node-",
            |events| records_of(events).len() >= first.len(),
            &mut daemon,
        )
        .await;
    daemon.stop().await;
    let before_restart = setup.checkpoints().await;
    let first_run: BTreeSet<u64> = setup
        .events("node-")
        .iter()
        .filter_map(|e| e["pid"].as_u64())
        .collect();

    let second = setup.produce(600..1_200).await;
    let mut daemon = setup.daemon(&properties, &env);
    let all: BTreeSet<_> = first.union(&second).cloned().collect();
    setup
        .wait_for_events(
            "node-",
            |events| records_of(events).len() >= all.len(),
            &mut daemon,
        )
        .await;
    daemon.stop().await;

    let events = setup.events("node-");
    let delivered = records_of(&events);
    assert_eq!(delivered.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(
        delivered.values().map(|n| n - 1).sum::<usize>(),
        0,
        "graceful stops checkpoint the last record: nothing is processed twice"
    );
    // The second run's children started at the first run's checkpoints.
    let restarted: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "initialize")
        .filter(|e| {
            !e["pid"]
                .as_u64()
                .is_some_and(|pid| first_run.contains(&pid))
        })
        .collect();
    assert_eq!(restarted.len(), 4);
    for init in restarted {
        let shard = init["shard"].as_str().unwrap_or_default();
        let at = ExtendedSequenceNumber::new(
            init["seq"].as_str().unwrap_or_default(),
            init["sub"].as_u64().unwrap_or_default(),
        );
        assert_eq!(before_restart[shard], at, "{shard}");
    }
    setup.finish().await;
}

/// SIGKILL one child: its shard alone restarts (a new child at the
/// checkpoint, after the restart backoff); the other shards' children keep
/// processing meanwhile; no record is missing, and the only repeats are
/// the killed shard's uncheckpointed batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_restarts_its_shard_alone() {
    let _serial = SERIAL.lock().await;
    if !peers().python() {
        return;
    }
    let setup = Setup::new(4).await;
    let properties = setup.properties(
        &format!("python3 {}", processor("recorder.py").display()),
        &[("childRestartBackoffMillis", "1000")],
    );
    let mut daemon = setup.daemon(&properties, &[]);
    // Records keep arriving during the whole test.
    let producing = setup.produce_in_background(0..1_600, Duration::from_secs(8));
    setup
        .wait_for_files(4, Duration::from_secs(60), &mut daemon)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let files = setup.recorder_files();
    let (victim_shard, victim_pid) = files.keys().next().cloned().expect("a child");
    let lines_at_kill = line_counts(&files);
    let killed_at = Instant::now();
    sigkill(victim_pid);
    // The new child for the victim's shard.
    let replacement = loop {
        daemon.assert_running();
        let now = setup.recorder_files();
        if let Some(((_, pid), _)) = now
            .iter()
            .find(|((shard, pid), _)| *shard == victim_shard && *pid != victim_pid)
        {
            break *pid;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no new child for {victim_shard}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Meanwhile the other shards went on.
    let lines_at_restart = line_counts(&setup.recorder_files());
    let others_progressed = lines_at_kill
        .iter()
        .filter(|((shard, _), _)| *shard != victim_shard)
        .filter(|(key, before)| lines_at_restart.get(*key).is_some_and(|now| now > *before))
        .count();
    assert!(
        others_progressed >= 1,
        "the other shards processed records while {victim_shard} restarted"
    );
    let produced = producing.await.expect("producer");
    let all_seen = |files: &BTreeMap<(String, u32), Vec<Value>>| {
        protocol_records(files).len() >= produced.len()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_seen(&setup.recorder_files()) {
        daemon.assert_running();
        assert!(Instant::now() < deadline, "records missing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop().await;

    let files = setup.recorder_files();
    let delivered = protocol_records(&files);
    assert_eq!(delivered.keys().cloned().collect::<BTreeSet<_>>(), produced);
    // One child per shard, but two for the victim's.
    let children: BTreeMap<&str, usize> = files.keys().fold(BTreeMap::new(), |mut m, (s, _)| {
        *m.entry(s.as_str()).or_default() += 1;
        m
    });
    assert_eq!(children.len(), 4);
    for (shard, count) in &children {
        assert_eq!(
            *count,
            if *shard == victim_shard { 2 } else { 1 },
            "{shard}"
        );
    }
    // The new child started at the old one's last checkpoint, and only the
    // batch after it came again.
    let old = &files[&(victim_shard.clone(), victim_pid)];
    let new = &files[&(victim_shard.clone(), replacement)];
    let checkpointed = last_checkpointed(old);
    assert_eq!(position_of_initialize(&new[0]), checkpointed);
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let uncheckpointed = records_after(old, &checkpointed);
    assert!(
        duplicates <= uncheckpointed,
        "{duplicates} repeats; {uncheckpointed} records were delivered after the last checkpoint"
    );
    eprintln!("killed child: {duplicates} records processed twice (its uncheckpointed batch)");
    setup.finish().await;
}

/// A properties file with an unknown key starts with a warning naming it;
/// one with a malformed value is refused, naming the key.
#[tokio::test]
async fn properties_files_are_checked_with_clear_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.properties");
    let base = "executableName = python3 app.py\nstreamName = s\napplicationName = a\n";
    std::fs::write(
        &path,
        format!("{base}failoverTimeMilis = 3000\nmaxActiveThreads = 4\n"),
    )
    .expect("write");
    let output = run_check(&path).await;
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failoverTimeMilis (line 4) is not a MultiLangDaemon setting; ignored (did you mean failoverTimeMillis?)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "maxActiveThreads (line 5) is a Java daemon setting kcl-multilang does not implement"
        ),
        "{stderr}"
    );

    std::fs::write(&path, format!("{base}failoverTimeMillis = 10s\n")).expect("write");
    let output = run_check(&path).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failoverTimeMillis = \"10s\": a whole number of milliseconds above 0"),
        "{stderr}"
    );

    std::fs::write(&path, "streamName = s\napplicationName = a\n").expect("write");
    let output = run_check(&path).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("executableName is required"));
}

async fn run_check(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kcl-multilang"))
        .args(["--check", "-p"])
        .arg(path)
        .output()
        .await
        .expect("run kcl-multilang")
}

/// Side by side with the Java MultiLangDaemon of the interop KCL version
/// (Maven Central), the same recorder child on the same stream and records:
/// per shard, the records each child receives are equal field by field
/// (batching may differ), every message has the same keys with the same
/// JSON types, and the checkpoints written are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_protocol_as_the_java_multilang_daemon() {
    let _serial = SERIAL.lock().await;
    let Some(java) = java_or_skip() else { return };
    if !peers().python() {
        return;
    }
    let setup = Setup::new(4).await;
    let records = setup.produce(0..800).await;
    let recorder = format!("python3 {}", processor("recorder.py").display());

    // The Java daemon. Its leases are created up front: on an empty lease
    // table the Java KCL waits a random 1–30 s before its first shard sync.
    let java_app = unique_name("multilang-java");
    seed_leases(&setup, &java_app).await;
    let java_dir = setup.dir.path().join("java-records");
    std::fs::create_dir_all(&java_dir).expect("dir");
    let properties = setup.properties_for(&java_app, &recorder, &[("shutdownGraceMillis", "3000")]);
    let mut daemon = java
        .spawn_class(
            "software.amazon.kinesis.multilang.MultiLangDaemon",
            "multilang-daemon",
            &["-p".to_owned(), properties.display().to_string()],
            &[
                ("MULTILANG_RECORD_DIR", java_dir.display().to_string()),
                ("MULTILANG_PROBE_CHECKPOINTS", "1".to_owned()),
            ],
        )
        .expect("start the Java MultiLangDaemon");
    let deadline = Instant::now() + Duration::from_secs(120);
    while protocol_records(&recorder_files_in(&java_dir)).len() < records.len() {
        assert!(
            Instant::now() < deadline,
            "the Java daemon did not deliver every record:\n{}",
            daemon.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // SIGTERM: each child gets shutdownRequested (it checkpoints) and
    // leaseLost; the JVM then waits out shutdownGraceMillis and exits 143.
    std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().expect("running").to_string()])
        .status()
        .expect("kill");
    let _ = daemon
        .wait(Duration::from_secs(60))
        .await
        .expect("the Java daemon exits");

    // Ours.
    let ours_dir = setup.dir.path().join("our-records");
    std::fs::create_dir_all(&ours_dir).expect("dir");
    let properties = setup.properties(&recorder, &[]);
    let mut ours = setup.daemon(
        &properties,
        &[
            ("MULTILANG_RECORD_DIR", ours_dir.display().to_string()),
            ("MULTILANG_PROBE_CHECKPOINTS", "1".to_owned()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while protocol_records(&recorder_files_in(&ours_dir)).len() < records.len() {
        ours.assert_running();
        assert!(Instant::now() < deadline, "{}", ours.log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ours.stop().await;

    let java_files = recorder_files_in(&java_dir);
    let our_files = recorder_files_in(&ours_dir);
    assert_eq!(java_files.len(), 4, "one Java child per shard");
    assert_eq!(our_files.len(), 4, "one child of ours per shard");
    let by_shard = |files: &BTreeMap<(String, u32), Vec<Value>>| -> BTreeMap<String, Vec<Value>> {
        files
            .iter()
            .map(|((shard, _), lines)| (shard.clone(), lines.clone()))
            .collect()
    };
    let (java_lines, our_lines) = (by_shard(&java_files), by_shard(&our_files));
    for (shard, java_shard) in &java_lines {
        let our_shard = &our_lines[shard];
        // The records, in order, field by field.
        assert_eq!(
            records_in(our_shard),
            records_in(java_shard),
            "{shard}: the records the child received"
        );
        // The messages' sequence of actions, batches merged.
        assert_eq!(actions(our_shard), actions(java_shard), "{shard}");
        assert_eq!(our_shard[0], java_shard[0], "{shard}: initialize");
        // Checkpoints refused as Java refuses them: during initialize, at a
        // sequence number that is not one, past the records delivered.
        let refused = |lines: &[Value]| -> Vec<Value> {
            lines
                .iter()
                .filter(|l| l["action"] == "checkpoint")
                .take(3)
                .cloned()
                .collect()
        };
        assert_eq!(refused(our_shard), refused(java_shard), "{shard}");
        let errors: Vec<&str> = refused(java_shard)
            .iter()
            .map(|l| l["error"].as_str().unwrap_or("none"))
            .map(|e| match e {
                "InvalidStateException" => "InvalidStateException",
                "IllegalArgumentException" => "IllegalArgumentException",
                _ => "other",
            })
            .collect();
        assert_eq!(
            errors,
            [
                "InvalidStateException",
                "IllegalArgumentException",
                "IllegalArgumentException"
            ],
            "{shard}: {:?}",
            refused(java_shard)
        );
        eprintln!(
            "{shard}: {} records; Java: {} batches, ours: {}; actions {:?}",
            records_in(java_shard).len(),
            java_shard
                .iter()
                .filter(|l| l["action"] == "processRecords")
                .count(),
            our_shard
                .iter()
                .filter(|l| l["action"] == "processRecords")
                .count(),
            actions(our_shard)
        );
    }
    // Every message (and record) has the same keys with the same types.
    let shapes = |lines: &BTreeMap<String, Vec<Value>>| {
        let mut shapes = BTreeMap::new();
        for line in lines.values().flatten() {
            let action = line["action"].as_str().unwrap_or("?").to_owned();
            shapes
                .entry(action)
                .or_insert_with(BTreeSet::new)
                .insert(shape(line));
            for record in line["records"].as_array().into_iter().flatten() {
                shapes
                    .entry("record".to_owned())
                    .or_insert_with(BTreeSet::new)
                    .insert(shape(record));
            }
        }
        shapes
    };
    assert_eq!(shapes(&our_lines), shapes(&java_lines));
    // The same checkpoints.
    let java_checkpoints = checkpoints_of(&setup, &java_app).await;
    let our_checkpoints = setup.checkpoints().await;
    assert_eq!(our_checkpoints, java_checkpoints);
    assert_eq!(our_checkpoints.len(), 4);
    setup.finish().await;
}

fn java_or_skip() -> Option<JavaInterop> {
    match JavaInterop::find() {
        Ok(java) => Some(java),
        Err(Unavailable::ToolMissing(why)) => {
            eprintln!("SKIPPED: {why}; the Java side-by-side test needs Java 17+ and Maven");
            None
        }
        Err(Unavailable::NotBuilt(why)) => panic!("{why}"),
    }
}

/// One free TRIM_HORIZON lease per shard of the stream, in `app`'s table.
async fn seed_leases(setup: &Setup, app: &str) {
    let table = LeaseTable::new(setup.aws.dynamodb_client(), app);
    table.create_if_missing().await.expect("lease table");
    let shards = setup
        .aws
        .kinesis_client()
        .list_shards()
        .stream_name(&setup.stream)
        .send()
        .await
        .expect("ListShards");
    for shard in shards.shards() {
        let mut lease =
            kcl::lease::Lease::new(shard.shard_id(), ExtendedSequenceNumber::TRIM_HORIZON);
        lease.hash_key_range = shard.hash_key_range().map(|range| {
            (
                range.starting_hash_key().to_owned(),
                range.ending_hash_key().to_owned(),
            )
        });
        table.create_lease_if_absent(&lease).await.expect("lease");
    }
}

async fn checkpoints_of(setup: &Setup, app: &str) -> HashMap<String, ExtendedSequenceNumber> {
    LeaseTable::new(setup.aws.dynamodb_client(), app)
        .list_leases()
        .await
        .expect("leases")
        .into_iter()
        .map(|lease| (lease.shard().to_owned(), lease.checkpoint))
        .collect()
}

/// The records of a child's processRecords messages, in order.
fn records_in(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["action"] == "processRecords")
        .flat_map(|l| l["records"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The actions a child received, consecutive processRecords (and the
/// checkpoint answers between them) merged into one.
fn actions(lines: &[Value]) -> Vec<String> {
    let mut actions: Vec<String> = Vec::new();
    for line in lines {
        let action = match line["action"].as_str().unwrap_or("?") {
            "processRecords" | "checkpoint"
                if actions.last().is_some_and(|a| a == "processRecords…") =>
            {
                continue;
            }
            "processRecords" => "processRecords…".to_owned(),
            other => other.to_owned(),
        };
        actions.push(action);
    }
    actions
}

/// An object's keys with their JSON types (`records` excluded).
fn shape(value: &Value) -> BTreeMap<String, &'static str> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let kind = match value {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            (key.clone(), kind)
        })
        .collect()
}

/// Children that hang past `timeoutInSeconds`, answer for another action,
/// or exit: each costs only its own shard a restart (the Java daemon would
/// exit, every shard with it); every record is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_misbehaving_child_ends_only_its_own_shard() {
    let _serial = SERIAL.lock().await;
    if !peers().python() {
        return;
    }
    let setup = Setup::new(4).await;
    let records = setup.produce(0..800).await;
    let mut shards = setup.shards().await;
    shards.sort();
    let faults = format!(
        "{}=hang,{}=bad-status,{}=exit",
        shards[1], shards[2], shards[3]
    );
    let properties = setup.properties(
        &format!("python3 {}", processor("recorder.py").display()),
        &[
            ("timeoutInSeconds", "2"),
            ("childRestartBackoffMillis", "500"),
        ],
    );
    let mut daemon = setup.daemon(&properties, &[("MULTILANG_FAULTS", faults)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every record, and the three replacement children.
    let complete = |files: &BTreeMap<(String, u32), Vec<Value>>| {
        protocol_records(files).len() >= records.len() && files.len() >= 7
    };
    while !complete(&setup.recorder_files()) {
        daemon.assert_running();
        assert!(Instant::now() < deadline, "{}", daemon.log_tail(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop().await;

    let files = setup.recorder_files();
    let delivered = protocol_records(&files);
    assert_eq!(delivered.keys().cloned().collect::<BTreeSet<_>>(), records);
    let children = |shard: &str| files.keys().filter(|(s, _)| s == shard).count();
    assert_eq!(children(&shards[0]), 1, "the sane shard kept its child");
    for shard in &shards[1..] {
        assert_eq!(
            children(shard),
            2,
            "{shard}: one failed child, one replacement"
        );
    }
    let log = std::fs::read_to_string(&daemon.log).expect("log");
    for expected in [
        "the child did not answer processRecords within 2s (timeoutInSeconds)",
        "the child answered Some(\"initialize\") while the daemon waited for its answer to processRecords",
        "the child closed its output",
    ] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    eprintln!(
        "three failed children: {duplicates} records processed twice (their uncheckpointed batches)"
    );
    setup.finish().await;
}

/// Start-up time, peak memory and CPU of `kcl-multilang` against the Java
/// MultiLangDaemon on the same workload (recorded in BENCHMARKS.md). Opt-in,
/// in release:
/// `cargo test --release -p kcl-multilang --test daemon -- --ignored footprint --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run in release, see BENCHMARKS.md"]
async fn footprint_against_the_java_daemon() {
    let _serial = SERIAL.lock().await;
    let Some(java) = java_or_skip() else { return };
    if !peers().python() {
        return;
    }
    const RECORDS: usize = 200_000;
    const ROUNDS: usize = 3;
    let setup = Setup::new(4).await;
    setup.produce(0..RECORDS).await;
    let recorder = format!("python3 {}", processor("recorder.py").display());
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..ROUNDS {
        for java_side in [false, true] {
            let app = unique_name(if java_side { "fp-java" } else { "fp-ours" });
            // Leases created up front for both: the Java KCL's random 1–30 s
            // wait on an empty table is not the JVM's cost.
            seed_leases(&setup, &app).await;
            let dir = setup.dir.path().join(&app);
            std::fs::create_dir_all(&dir).expect("dir");
            let properties =
                setup.properties_for(&app, &recorder, &[("shutdownGraceMillis", "3000")]);
            let env = [("MULTILANG_RECORD_DIR", dir.display().to_string())];
            let started = Instant::now();
            let (pid, mut java_process, mut our_process) = if java_side {
                let process = java
                    .spawn_class(
                        "software.amazon.kinesis.multilang.MultiLangDaemon",
                        &format!("footprint-{round}"),
                        &["-p".to_owned(), properties.display().to_string()],
                        &env,
                    )
                    .expect("java");
                (process.id().expect("pid"), Some(process), None)
            } else {
                let daemon = setup.daemon(&properties, &env);
                (daemon.child.id().expect("pid"), None, Some(daemon))
            };
            let mut first = None;
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let files = recorder_files_in(&dir);
                let delivered = protocol_records(&files).len();
                if first.is_none() && delivered > 0 {
                    first = Some(started.elapsed());
                }
                if delivered >= RECORDS {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round} java={java_side} stalled"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let drained = started.elapsed();
            let (peak_kib, cpu) = proc_usage(pid);
            if let Some(process) = java_process.as_mut() {
                std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .expect("kill");
                let _ = process.wait(Duration::from_secs(60)).await;
            }
            if let Some(daemon) = our_process.as_mut() {
                daemon.stop().await;
            }
            let row = (first.unwrap_or_default(), drained, peak_kib, cpu);
            eprintln!(
                "round {round} {}: first record {:?}, all {RECORDS} {:?}, peak RSS {} MiB, CPU {:?}",
                if java_side {
                    "Java MultiLangDaemon"
                } else {
                    "kcl-multilang"
                },
                row.0,
                row.1,
                row.2 / 1024,
                row.3
            );
            if java_side {
                theirs.push(row)
            } else {
                ours.push(row)
            }
        }
    }
    let median = |rows: &mut Vec<Footprint>, pick: Pick| {
        let mut values: Vec<f64> = rows.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let picks: [(&str, Pick); 4] = [
        ("start to first record (s)", |r| r.0.as_secs_f64()),
        ("start to all records (s)", |r| r.1.as_secs_f64()),
        ("peak RSS (MiB)", |r| r.2 as f64 / 1024.0),
        ("daemon CPU, user+sys (s)", |r| r.3.as_secs_f64()),
    ];
    eprintln!("| median of {ROUNDS} | kcl-multilang | Java MultiLangDaemon 2.7.2 | ratio |");
    eprintln!("|---|---|---|---|");
    for (name, pick) in picks {
        let (a, b) = (median(&mut ours, pick), median(&mut theirs, pick));
        eprintln!("| {name} | {a:.2} | {b:.2} | {:.1}× |", b / a);
    }
    setup.finish().await;
}

/// Start to first record, start to all records, peak RSS (KiB), CPU.
type Footprint = (Duration, Duration, u64, Duration);
/// One figure of a [`Footprint`].
type Pick = fn(&Footprint) -> f64;

/// A process's peak resident set (KiB, `VmHWM`) and CPU time (user + system,
/// its own, children excluded), from /proc.
fn proc_usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    let clock_ticks = 100; // USER_HZ on Linux
    (
        peak,
        Duration::from_millis((ticks(11) + ticks(12)) * 1000 / clock_ticks),
    )
}
