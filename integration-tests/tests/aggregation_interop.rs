//! Interop of our aggregation codec with the Python `aws-kinesis-agg` package
//! (PyPI), installed by `scripts/local-aws install` and found through
//! `KINESIS_AGG_PYTHON` (exported by `scripts/local-aws env`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use kpl::aggregation::{AggregateBuilder, deaggregate};
use serde_json::{Value, json};

/// A user record: partition key, explicit hash key, data.
type UserRecord = (String, Option<u128>, Vec<u8>);

fn python() -> PathBuf {
    match std::env::var_os("KINESIS_AGG_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "KINESIS_AGG_PYTHON is not set: run `scripts/local-aws install` and \
             `eval \"$(scripts/local-aws env)\"` (the README's test command does both)"
        ),
    }
}

fn run_script(mode: &str, input: &[Value]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/agg_interop.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python interop helper");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let payload: String = input.iter().map(|v| format!("{v}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(payload.as_bytes()));
    let out = child
        .wait_with_output()
        .expect("wait for the Python interop helper");
    writer
        .join()
        .expect("writer thread")
        .expect("write to the helper");
    assert!(
        out.status.success(),
        "agg_interop.py {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn sample_records() -> Vec<UserRecord> {
    let mut records = Vec::new();
    for i in 0..300u32 {
        let partition_key = match i % 4 {
            0 => "shared-key".to_owned(),
            1 => format!("key-{i}"),
            2 => format!("ключ-{}-🚀", i % 7),
            _ => "k".repeat(1 + (i as usize * 13) % 256),
        };
        let explicit_hash_key = match i % 5 {
            0 => Some(u128::MAX - u128::from(i)),
            1 => Some(u128::from(i % 3)),
            _ => None,
        };
        let data = match i % 6 {
            0 => Vec::new(),
            1 => vec![0xF3, 0x89, 0x9A, 0xC2, 0, 1, 2],
            _ => format!("payload {i} ")
                .repeat((i as usize * 31) % 40)
                .into_bytes(),
        };
        records.push((partition_key, explicit_hash_key, data));
    }
    records
}

fn as_json(record: &UserRecord) -> Value {
    json!({"pk": record.0, "ehk": record.1.map(|k| k.to_string()), "data": B64.encode(&record.2)})
}

#[test]
fn python_aggregates_decode_to_the_same_user_records_with_our_decoder() {
    let records = sample_records();
    let input: Vec<Value> = records.iter().map(as_json).collect();
    let kinesis_records = run_script("encode", &input);
    assert!(
        kinesis_records.len() < records.len(),
        "the package aggregated"
    );

    let mut decoded = Vec::new();
    for record in &kinesis_records {
        let data = B64
            .decode(record["data"].as_str().expect("data"))
            .expect("base64");
        let users = deaggregate(
            record["pk"].as_str().expect("pk"),
            record["ehk"].as_str(),
            Bytes::from(data),
        );
        decoded.extend(users);
    }
    assert_eq!(decoded.len(), records.len());
    for (got, (partition_key, explicit_hash_key, data)) in decoded.iter().zip(&records) {
        assert_eq!(&got.partition_key, partition_key);
        assert_eq!(got.data.as_ref(), data.as_slice());
        // The package (1.2.3) writes an explicit hash key index only for
        // records that have one, as the AWS KPL does.
        assert_eq!(
            got.explicit_hash_key,
            explicit_hash_key.map(|k| k.to_string())
        );
    }
}

#[test]
fn our_aggregates_decode_to_the_same_user_records_with_the_python_package() {
    let records = sample_records();
    let mut builder = AggregateBuilder::new();
    let mut kinesis_records = Vec::new();
    for (partition_key, explicit_hash_key, data) in &records {
        let data = Bytes::from(data.clone());
        if !builder.try_add(partition_key, *explicit_hash_key, &data, 4_096) {
            kinesis_records.extend(builder.take());
            builder.add(partition_key, *explicit_hash_key, &data);
        }
    }
    kinesis_records.extend(builder.take());
    assert!(
        kinesis_records.iter().any(|r| r.user_records > 1),
        "some records were aggregated"
    );

    let input: Vec<Value> = kinesis_records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"pk": r.partition_key, "ehk": r.explicit_hash_key, "data": B64.encode(&r.data), "seq": format!("{}", 1000 + i)})
        })
        .collect();
    let users = run_script("decode", &input);
    assert_eq!(users.len(), records.len());
    for (got, (partition_key, explicit_hash_key, data)) in users.iter().zip(&records) {
        assert_eq!(got["pk"].as_str(), Some(partition_key.as_str()));
        assert_eq!(
            B64.decode(got["data"].as_str().expect("data"))
                .expect("base64"),
            *data
        );
        if let Some(ehk) = explicit_hash_key {
            assert_eq!(got["ehk"].as_str(), Some(ehk.to_string().as_str()));
        }
    }
}

#[test]
fn a_one_mebibyte_record_survives_both_directions() {
    // The Python aggregator keeps aggregates under the 1 MiB Kinesis limit, so
    // a 1 MiB record leaves it alone; our encoder also sends it unwrapped.
    let big: UserRecord = ("big".into(), None, vec![b'x'; 1 << 20]);
    let small: UserRecord = ("small".into(), None, b"tiny".to_vec());

    let mut builder = AggregateBuilder::new();
    builder.add(&small.0, None, &Bytes::from(small.2.clone()));
    builder.add(&big.0, None, &Bytes::from(big.2.clone()));
    let ours = builder.take().expect("two records");
    let users = run_script(
        "decode",
        &[
            json!({"pk": ours.partition_key, "ehk": ours.explicit_hash_key, "data": B64.encode(&ours.data), "seq": "1"}),
        ],
    );
    assert_eq!(users.len(), 2);
    assert_eq!(
        B64.decode(users[1]["data"].as_str().expect("data"))
            .expect("base64")
            .len(),
        1 << 20
    );
}
