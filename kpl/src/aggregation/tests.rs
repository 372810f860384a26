use bytes::Bytes;
use md5::{Digest, Md5};
use proptest::prelude::*;
use prost::Message;

use super::proto::{AggregatedRecord, Record};
use super::*;

/// Wraps protobuf bytes as an aggregate with a correct digest.
fn frame(body: &[u8]) -> Bytes {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    Bytes::from(out)
}

type Input = (String, Option<u128>, Vec<u8>);

fn build(records: &[Input]) -> (AggregateBuilder, KinesisRecord) {
    let mut agg = AggregateBuilder::new();
    for (pk, ehk, data) in records {
        agg.add(pk, *ehk, &Bytes::from(data.clone()));
    }
    let mut copy = AggregateBuilder::new();
    for (pk, ehk, data) in records {
        copy.add(pk, *ehk, &Bytes::from(data.clone()));
    }
    let record = agg.take().expect("records were added");
    (copy, record)
}

fn assert_round_trip(records: &[Input]) {
    let (builder, record) = build(records);
    assert_eq!(record.user_records, records.len());
    if records.len() == 1 {
        assert_eq!(
            record.data.as_ref(),
            records[0].2.as_slice(),
            "a lone record is not wrapped"
        );
        assert_eq!(record.partition_key, records[0].0);
        return;
    }
    assert_eq!(
        record.data.len(),
        builder.encoded_len(),
        "size accounting is exact"
    );
    let decoded = decode_aggregate(&record.data).expect("valid aggregate");
    assert_eq!(decoded.len(), records.len());
    for (i, ((pk, ehk, data), got)) in records.iter().zip(&decoded).enumerate() {
        assert_eq!(&got.partition_key, pk);
        assert_eq!(got.explicit_hash_key, ehk.map(|k| k.to_string()));
        assert_eq!(got.data.as_ref(), data.as_slice());
        assert_eq!(got.sub_sequence_number, i as u64);
        assert!(got.aggregated);
    }
    let first_hash = crate::hash_key::hash_key(&records[0].0, records[0].1);
    assert_eq!(record.explicit_hash_key, Some(first_hash.to_string()));
}

#[test]
fn builder_bytes_equal_prost_encoding() {
    let mut agg = AggregateBuilder::new();
    let inputs: [(&str, Option<u128>, &[u8]); 4] = [
        ("a", None, b"1"),
        ("b", Some(5), b""),
        ("a", Some(5), b"333"),
        ("c", Some(u128::MAX), b"4"),
    ];
    for (pk, ehk, data) in inputs {
        agg.add(pk, ehk, &Bytes::copy_from_slice(data));
    }
    let ours = agg.take().unwrap().data;
    let expected = AggregatedRecord {
        partition_key_table: vec!["a".into(), "b".into(), "c".into()],
        explicit_hash_key_table: vec!["5".into(), u128::MAX.to_string()],
        records: vec![
            Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: Bytes::from_static(b"1"),
                tags: vec![],
            },
            Record {
                partition_key_index: 1,
                explicit_hash_key_index: Some(0),
                data: Bytes::new(),
                tags: vec![],
            },
            Record {
                partition_key_index: 0,
                explicit_hash_key_index: Some(0),
                data: Bytes::from_static(b"333"),
                tags: vec![],
            },
            Record {
                partition_key_index: 2,
                explicit_hash_key_index: Some(1),
                data: Bytes::from_static(b"4"),
                tags: vec![],
            },
        ],
    };
    assert_eq!(ours, frame(&expected.encode_to_vec()));
}

#[test]
fn builder_is_reusable_after_take() {
    let mut agg = AggregateBuilder::new();
    agg.add("x", None, &Bytes::from_static(b"1"));
    agg.add("y", None, &Bytes::from_static(b"2"));
    let first = agg.take().unwrap();
    assert!(agg.is_empty() && agg.encoded_len() == 0 && agg.take().is_none());
    agg.add("x", None, &Bytes::from_static(b"1"));
    agg.add("y", None, &Bytes::from_static(b"2"));
    assert_eq!(agg.take().unwrap(), first);
}

#[test]
fn one_mebibyte_records_round_trip() {
    let big = vec![0xA5; 1 << 20];
    assert_round_trip(&[("k".into(), None, big.clone()), ("k".into(), Some(1), big)]);
}

#[test]
fn try_add_respects_the_limit_and_always_takes_a_first_record() {
    let mut agg = AggregateBuilder::new();
    assert!(
        agg.try_add("k", None, &Bytes::from(vec![0; 100]), 10),
        "first record always fits"
    );
    assert!(!agg.try_add("k", None, &Bytes::from(vec![0; 100]), 150));
    let exact = agg.size_with("k", None, 10);
    assert!(agg.try_add("k", None, &Bytes::from(vec![0; 10]), exact));
    assert_eq!(agg.encoded_len(), exact);
}

#[test]
fn corrupt_digest_and_protobuf_are_not_aggregates() {
    let mut agg = AggregateBuilder::new();
    agg.add("a", None, &Bytes::from_static(b"one"));
    agg.add("b", None, &Bytes::from_static(b"two"));
    let good = agg.take().unwrap().data;

    let mut bad_digest = good.to_vec();
    *bad_digest.last_mut().unwrap() ^= 1;
    assert_eq!(
        decode_aggregate(&Bytes::from(bad_digest)),
        Err(NotAggregated::DigestMismatch)
    );

    assert_eq!(
        decode_aggregate(&frame(&[0xFF, 0xFF, 0xFF])),
        Err(NotAggregated::InvalidProtobuf)
    );
    assert_eq!(decode_aggregate(&frame(&[])), Err(NotAggregated::Empty));
    assert_eq!(
        decode_aggregate(&Bytes::copy_from_slice(&MAGIC[..3])),
        Err(NotAggregated::NoMagic)
    );
    assert_eq!(
        decode_aggregate(&Bytes::copy_from_slice(&MAGIC)),
        Err(NotAggregated::TooShort)
    );
}

#[test]
fn bad_table_indexes_pass_the_record_through_unchanged() {
    let bad_pk = AggregatedRecord {
        partition_key_table: vec!["a".into()],
        explicit_hash_key_table: vec![],
        records: vec![Record {
            partition_key_index: 1,
            explicit_hash_key_index: None,
            data: Bytes::new(),
            tags: vec![],
        }],
    };
    let bytes = frame(&bad_pk.encode_to_vec());
    assert_eq!(
        decode_aggregate(&bytes),
        Err(NotAggregated::PartitionKeyIndexOutOfRange)
    );
    let users = deaggregate("outer", Some("9"), bytes.clone());
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].data, bytes);
    assert_eq!(users[0].partition_key, "outer");
    assert_eq!(users[0].explicit_hash_key.as_deref(), Some("9"));
    assert!(!users[0].aggregated);

    let bad_ehk = AggregatedRecord {
        partition_key_table: vec!["a".into()],
        explicit_hash_key_table: vec![],
        records: vec![Record {
            partition_key_index: 0,
            explicit_hash_key_index: Some(u64::MAX),
            data: Bytes::new(),
            tags: vec![],
        }],
    };
    assert_eq!(
        decode_aggregate(&frame(&bad_ehk.encode_to_vec())),
        Err(NotAggregated::ExplicitHashKeyIndexOutOfRange)
    );
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop_oneof![Just("same".to_string()), "\\PC{1,256}"],
        prop::option::of(any::<u128>()),
        prop::collection::vec(any::<u8>(), 0..600),
    )
}

proptest! {
    #[test]
    fn round_trip(records in prop::collection::vec(input(), 1..40)) {
        assert_round_trip(&records);
    }

    #[test]
    fn size_limit_is_never_exceeded(records in prop::collection::vec(input(), 1..60), max in 64usize..4096) {
        let mut agg = AggregateBuilder::new();
        let mut sent = Vec::new();
        for (pk, ehk, data) in &records {
            let data = Bytes::from(data.clone());
            if !agg.try_add(pk, *ehk, &data, max) {
                sent.push(agg.take().unwrap());
                prop_assert!(agg.try_add(pk, *ehk, &data, max));
            }
        }
        sent.extend(agg.take());
        let total: usize = sent.iter().map(|r| r.user_records).sum();
        prop_assert_eq!(total, records.len());
        for record in sent.iter().filter(|r| r.user_records > 1) {
            prop_assert!(record.data.len() <= max, "aggregate of {} bytes over {}", record.data.len(), max);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&data);
        for candidate in [Bytes::from(data.clone()), Bytes::from(framed), frame(&data)] {
            let users = deaggregate("pk", None, candidate.clone());
            prop_assert!(!users.is_empty());
            if decode_aggregate(&candidate).is_err() {
                prop_assert_eq!(&users[0].data, &candidate);
            }
        }
    }

    #[test]
    fn truncated_or_flipped_aggregates_never_panic(
        records in prop::collection::vec(input(), 2..10),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let (_, record) = build(&records);
        let bytes = record.data;
        let truncated = bytes.slice(..cut.index(bytes.len()));
        prop_assert!(decode_aggregate(&truncated).is_err());
        let mut flipped = bytes.to_vec();
        flipped[flip.index(bytes.len())] ^= 0x40;
        prop_assert!(decode_aggregate(&Bytes::from(flipped)).is_err());
    }
}

/// What a decoder made of an `AggregatedRecord`'s bytes: the tables and
/// each record's (partition key index, explicit hash key index, data).
type Parsed = (Vec<String>, Vec<String>, Vec<(u64, Option<u64>, Vec<u8>)>);

fn by_prost(body: &[u8]) -> Option<Parsed> {
    let aggregate = AggregatedRecord::decode(body).ok()?;
    Some((
        aggregate.partition_key_table,
        aggregate.explicit_hash_key_table,
        aggregate
            .records
            .into_iter()
            .map(|r| {
                (
                    r.partition_key_index,
                    r.explicit_hash_key_index,
                    r.data.to_vec(),
                )
            })
            .collect(),
    ))
}

fn by_wire(body: &[u8]) -> Option<Parsed> {
    let body = Bytes::copy_from_slice(body);
    let aggregate = super::wire::parse(&body).ok()?;
    Some((
        aggregate
            .partition_key_table
            .iter()
            .map(|k| (*k).to_owned())
            .collect(),
        aggregate
            .explicit_hash_key_table
            .iter()
            .map(|k| (*k).to_owned())
            .collect(),
        aggregate
            .records
            .into_iter()
            .map(|r| {
                (
                    r.partition_key_index,
                    r.explicit_hash_key_index,
                    r.data.to_vec(),
                )
            })
            .collect(),
    ))
}

#[test]
fn the_wire_parser_agrees_with_prost_on_unusual_encodings() {
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        // An unknown varint field, an unknown fixed32, an unknown group.
        vec![0x20, 0x05, 0x2D, 1, 2, 3, 4, 0x33, 0x08, 0x01, 0x34],
        // A group that never ends; an end of group that no group opened.
        vec![0x33, 0x08, 0x01],
        vec![0x34],
        // Field 1 (a string) as a varint: the wrong wire type.
        vec![0x08, 0x01],
        // Field number 0.
        vec![0x02, 0x00],
        // A string that is not UTF-8.
        vec![0x0A, 0x01, 0xFF],
        // A length past the end.
        vec![0x0A, 0x05, b'a'],
        // An 11-byte varint; a 10-byte varint whose last byte is too big.
        vec![
            0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
        ],
        vec![
            0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
        ],
        // A record with no fields; one with its data twice and its index twice.
        vec![0x1A, 0x00],
        vec![
            0x1A, 0x0A, 0x08, 0x01, 0x08, 0x02, 0x1A, 0x01, b'a', 0x1A, 0x01, b'b',
        ],
        // A record with a tag whose value is not UTF-8, and a valid tag.
        vec![0x1A, 0x06, 0x22, 0x04, 0x12, 0x02, 0xC3, 0x28],
        vec![0x1A, 0x07, 0x22, 0x05, 0x0A, 0x01, b'k', 0x12, 0x00],
    ];
    for body in cases {
        assert_eq!(by_wire(&body), by_prost(&body), "{body:02x?}");
    }
}

proptest! {
    /// The zero-copy parser accepts and refuses what prost does, and reads
    /// the same values, on arbitrary bytes.
    #[test]
    fn the_wire_parser_agrees_with_prost_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(by_wire(&body), by_prost(&body));
    }

    /// ... and on aggregates with bytes changed or cut.
    #[test]
    fn the_wire_parser_agrees_with_prost_on_damaged_aggregates(
        records in prop::collection::vec(input(), 2..8),
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, record) = build(&records);
        let mut body = record.data[MAGIC.len()..record.data.len() - DIGEST_LEN].to_vec();
        for (at, byte) in changes {
            let i = at.index(body.len());
            body[i] = byte;
        }
        prop_assert_eq!(by_wire(&body), by_prost(&body));
        let cut = &body[..cut.index(body.len() + 1)];
        prop_assert_eq!(by_wire(cut), by_prost(cut));
    }
}

#[test]
fn a_record_before_its_key_table_entry_is_resolved() {
    // Field 3 (a record: key index 1, data "x") before field 1 twice.
    let body = [
        0x1A, 0x05, 0x08, 0x01, 0x1A, 0x01, b'x', //
        0x0A, 0x01, b'a', 0x0A, 0x01, b'b', //
        0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01, b'y',
    ];
    let records = decode_aggregate(&frame(&body)).expect("an aggregate");
    let keys: Vec<(&str, &[u8])> = records
        .iter()
        .map(|r| (r.partition_key.as_str(), &r.data[..]))
        .collect();
    assert_eq!(keys, [("b", &b"x"[..]), ("a", &b"y"[..])]);
}

#[test]
fn an_aggregate_whose_keys_would_take_too_much_memory_is_not_deaggregated() {
    // One 512 KiB key and 300,000 empty records pointing at it: 147 GiB of
    // key copies. Delivered as one plain record instead.
    let mut body = Vec::new();
    let key = "k".repeat(512 << 10);
    body.push(0x0A);
    let mut len = key.len();
    while len >= 0x80 {
        body.push((len as u8 & 0x7F) | 0x80);
        len >>= 7;
    }
    body.push(len as u8);
    body.extend_from_slice(key.as_bytes());
    for _ in 0..300_000 {
        body.extend_from_slice(&[0x1A, 0x00]);
    }
    let framed = frame(&body);
    assert_eq!(decode_aggregate(&framed), Err(NotAggregated::KeysTooLarge));
    let users = deaggregate("pk", None, framed.clone());
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].data, framed);
}
