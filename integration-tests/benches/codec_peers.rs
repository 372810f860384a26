//! The aggregation codec side by side with the aws-kinesis-agg packages
//! (Python from PyPI, Node from npm), in one run, on the same user records:
//! aggregation into ≤ 51,200-byte aggregates and deaggregation with the MD5
//! check; ours also against the MD5 alone on the same bytes.
//!
//! ```text
//! scripts/local-aws install && scripts/peers     # the packages, once
//! cargo bench -p integration-tests --bench codec_peers
//! ```
//!
//! The peers run `integration-tests/python/agg_bench.py` and
//! `integration-tests/node/agg_bench.js` on a file of the same records
//! (their timers cover only the library calls; see their headers).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kpl::bench::codec;

const RECORDS: usize = 200_000;
const KEYS: usize = 10_000;
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (aggregation, deaggregation) records/s medians of a peer script.
fn peer(command: &mut Command, name: &str) -> Option<(f64, f64)> {
    let output = match command.output() {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!(
                "{name}: failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        Err(error) => {
            eprintln!("{name}: cannot run: {error}");
            return None;
        }
    };
    let mut aggregation = Vec::new();
    let mut deaggregation = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(round) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let records = round["records"].as_f64()?;
        aggregation.push(records / round["aggregate_seconds"].as_f64()?);
        deaggregation.push(records / round["deaggregate_seconds"].as_f64()?);
    }
    (!aggregation.is_empty()).then(|| (median(aggregation), median(deaggregation)))
}

fn main() {
    let local = std::env::var_os("LOCAL_AWS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join(".local-aws"));
    let python = local.join("venv/bin/python");
    let node_modules = local.join("multilang/node/node_modules");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "| records | codec | ours | Python aws-kinesis-agg 1.2.3 | Node aws-kinesis-agg 4.2.8 | ours ÷ Python | ours ÷ Node |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, records) in [
        ("100 B", codec::records(RECORDS, KEYS, |_| 100)),
        (
            "10 B – 5 KB",
            codec::records(RECORDS, KEYS, |i| [10, 100, 1_000, 5_000][i % 4]),
        ),
    ] {
        let input = dir.path().join("input.tsv");
        let mut text = String::new();
        for (key, data) in &records {
            text.push_str(key);
            text.push('\t');
            text.push_str(&B64.encode(data));
            text.push('\n');
        }
        std::fs::write(&input, text).expect("input");

        let mut aggregation = Vec::new();
        let mut deaggregation = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..ROUNDS {
            let (aggregates, took) = codec::aggregate(&records);
            aggregation.push(RECORDS as f64 / took.as_secs_f64());
            let (count, took) = codec::deaggregate(&aggregates);
            assert_eq!(count, RECORDS);
            deaggregation.push(RECORDS as f64 / took.as_secs_f64());
            floor.push(RECORDS as f64 / codec::md5_floor(&aggregates).as_secs_f64());
        }
        let ours = (median(aggregation), median(deaggregation));
        let floor = median(floor);
        let rounds = ROUNDS.to_string();
        let py = peer(
            Command::new(&python)
                .arg(repository().join("integration-tests/python/agg_bench.py"))
                .args([input.as_os_str(), rounds.as_ref()]),
            "python",
        );
        let js = peer(
            Command::new("node")
                .env("NODE_PATH", &node_modules)
                .arg(repository().join("integration-tests/node/agg_bench.js"))
                .args([input.as_os_str(), rounds.as_ref()]),
            "node",
        );
        let m = |v: f64| format!("{:.2} M/s", v / 1e6);
        let cell = |v: Option<f64>| v.map_or("—".to_owned(), m);
        let ratio =
            |a: f64, b: Option<f64>| b.map_or("—".to_owned(), |b| format!("{:.1}×", a / b));
        println!(
            "| {name} | aggregation | {} | {} | {} | {} | {} |",
            m(ours.0),
            cell(py.map(|p| p.0)),
            cell(js.map(|p| p.0)),
            ratio(ours.0, py.map(|p| p.0)),
            ratio(ours.0, js.map(|p| p.0)),
        );
        println!(
            "| {name} | deaggregation (MD5 checked) | {} ({:.0} % of the MD5 floor, {}) | {} | {} | {} | {} |",
            m(ours.1),
            100.0 * ours.1 / floor,
            m(floor),
            cell(py.map(|p| p.1)),
            cell(js.map(|p| p.1)),
            ratio(ours.1, py.map(|p| p.1)),
            ratio(ours.1, js.map(|p| p.1)),
        );
    }
    println!(
        "(medians of {ROUNDS} rounds each, {RECORDS} records, {KEYS} partition keys, one thread each)"
    );
}
