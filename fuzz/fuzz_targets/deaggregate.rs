//! Untrusted Kinesis record data through the deaggregator: it must never
//! panic, and whatever it does not accept comes back unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let users = kpl::aggregation::deaggregate("pk", None, data.clone());
    assert!(!users.is_empty());
    if !users[0].aggregated {
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].data, data);
    }
    // Also feed the bytes as the body of a well-framed aggregate, so the
    // protobuf parser sees them past the digest check.
    let mut framed = kpl::aggregation::MAGIC.to_vec();
    framed.extend_from_slice(&data);
    let digest = <md5::Md5 as md5::Digest>::digest(&data);
    framed.extend_from_slice(&digest);
    let _ = kpl::aggregation::decode_aggregate(&Bytes::from(framed));
});
