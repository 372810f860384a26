//! The aggregation codec: aggregation into ≤ 51,200-byte aggregates,
//! deaggregation with the MD5 check, and the MD5 alone on the same bytes
//! (the floor deaggregation cannot beat). One thread.
//!
//! ```text
//! cargo bench -p kpl --bench codec
//! ```
//!
//! The side-by-side run with the aws-kinesis-agg packages (Python, Node) is
//! `cargo bench -p integration-tests --bench codec_peers`.

use kpl::bench::codec;

const RECORDS: usize = 200_000;
const KEYS: usize = 10_000;
const ROUNDS: usize = 9;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `-- 100` runs only the 100-byte set (for profiling).
    let only_small = std::env::args().any(|a| a == "100");
    for (name, records) in [
        ("100-byte records", codec::records(RECORDS, KEYS, |_| 100)),
        (
            "mixed sizes (10 B – 5 KB)",
            codec::records(RECORDS, KEYS, |i| [10, 100, 1_000, 5_000][i % 4]),
        ),
    ]
    .into_iter()
    .take(if only_small { 1 } else { 2 })
    {
        let mut aggregation = Vec::new();
        let mut deaggregation = Vec::new();
        let mut floor = Vec::new();
        let mut aggregates = Vec::new();
        for _ in 0..ROUNDS {
            let (made, took) = codec::aggregate(&records);
            aggregation.push(RECORDS as f64 / took.as_secs_f64());
            let (count, took) = codec::deaggregate(&made);
            assert_eq!(count, RECORDS);
            deaggregation.push(RECORDS as f64 / took.as_secs_f64());
            floor.push(RECORDS as f64 / codec::md5_floor(&made).as_secs_f64());
            aggregates = made;
        }
        let bytes: usize = aggregates.iter().map(|a| a.len()).sum();
        let (agg, deagg, md5) = (median(aggregation), median(deaggregation), median(floor));
        println!(
            "{name}: {} aggregates, {:.1} MB; median of {ROUNDS}: aggregation {:.2} M records/s, \
             deaggregation {:.2} M records/s, MD5 alone {:.2} M records/s ({:.0} MB/s): deaggregation at {:.0} % of the MD5 floor",
            aggregates.len(),
            bytes as f64 / 1e6,
            agg / 1e6,
            deagg / 1e6,
            md5 / 1e6,
            md5 * bytes as f64 / RECORDS as f64 / 1e6,
            100.0 * deagg / md5
        );
    }
}
