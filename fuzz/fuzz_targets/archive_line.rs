//! Arbitrary archived objects and keys (what `replay` reads from S3): key
//! parsing, decompression and line parsing must never panic.
#![no_main]

use connector_s3::compress::Compression;
use connector_s3::key::{DEFAULT_JOURNAL_TEMPLATE, DEFAULT_TEMPLATE, KeyTemplate};
use connector_s3::transform::JsonRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for template in [DEFAULT_TEMPLATE, DEFAULT_JOURNAL_TEMPLATE] {
            if let Ok(template) = KeyTemplate::new("p", template) {
                let _ = template.parse_key(text);
            }
        }
        for line in text.lines() {
            if let Ok(record) = serde_json::from_str::<JsonRecord>(line) {
                let _ = record.payload();
                let _ = record.arrival();
            }
        }
    }
    for compression in [Compression::GZIP, Compression::ZSTD] {
        // At most 16 MiB out: a few bytes of zstd can claim gigabytes.
        if let Ok(decoder) = compression.decoder(data) {
            let _ = std::io::copy(&mut std::io::Read::take(decoder, 16 << 20), &mut std::io::sink());
        }
    }
});
