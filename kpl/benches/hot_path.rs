//! Benchmark of the producer's hot path: add → aggregate → collect → PutRecords
//! request built, with the network replaced by a sink. 100-byte records,
//! one thread.
//!
//! ```text
//! cargo bench -p kpl --bench hot_path
//! ```
//!
//! Prints the median, minimum and maximum of several runs of user records per
//! second; BENCHMARKS.md records the results.

use std::time::Instant;

use kpl::bench::HotPath;
use kpl::{ProducerConfig, UserRecord};

const RECORDS_PER_RUN: usize = 200_000;
const RUNS: usize = 25;
const SHARDS: u32 = 4;

fn run(records: Vec<UserRecord>) -> f64 {
    let count = records.len();
    let mut path = HotPath::new(ProducerConfig::default(), "bench", SHARDS).expect("shard map");
    let started = Instant::now();
    for (i, record) in records.into_iter().enumerate() {
        path.add(record);
        if i % 1024 == 1023 {
            path.drain(false);
        }
    }
    path.drain(true);
    let elapsed = started.elapsed();
    let (requests, entries) = path.built();
    assert!(requests > 0 && entries > 0);
    count as f64 / elapsed.as_secs_f64()
}

fn main() {
    // Records are made before the clock starts: the benchmark measures the
    // producer taking ownership of a record, not the caller building it.
    let make = || -> Vec<UserRecord> {
        (0..RECORDS_PER_RUN)
            .map(|i| {
                let partition_key = format!("partition-{}", i % 10_000);
                UserRecord::new("bench", partition_key, vec![b'x'; 100])
            })
            .collect()
    };
    let mut rates: Vec<f64> = (0..RUNS).map(|_| run(make())).collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "hot path, 100-byte records, {SHARDS} shards, one thread: median {:.0} user records/s (min {:.0}, max {:.0}, {RUNS} runs of {RECORDS_PER_RUN})",
        rates[RUNS / 2],
        rates[0],
        rates[RUNS - 1]
    );
}
