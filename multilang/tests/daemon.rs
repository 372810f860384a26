//! `kcl-multilang` as a process, with real MultiLang record processors:
//! amazon-kclpy's own sample (Python), a processor on the npm package
//! aws-kcl (Node), and a protocol recorder run under both our daemon and
//! the Java MultiLangDaemon. Against the embedded back ends of the test
//! process; the packages come from `scripts/multilang-peers`, the Java
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
    // The checkpoints: the last record of each shard.
    let checkpoints = setup.checkpoints().await;
    for (shard, last) in last_positions(&events) {
        assert_eq!(checkpoints[&shard], last, "{shard}");
    }
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
