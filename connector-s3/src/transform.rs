//! The transformer stage: a Kinesis record becomes one item (a line).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use kcl::retrieval::ConsumerRecord;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a record comes from.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The shard.
    pub shard_id: &'a str,
}

/// A transformer's failure; the record is skipped and counted.
#[derive(Debug, thiserror::Error)]
#[error("cannot transform record {sequence_number}/{sub_sequence_number}: {source}")]
pub struct TransformError {
    /// The record's sequence number.
    pub sequence_number: String,
    /// The record's sub-sequence number.
    pub sub_sequence_number: u64,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Turns a record into the bytes of one item, delimiter included.
///
/// ```
/// use connector_s3::transform::{RecordContext, Transformer, TransformError};
/// use kcl::retrieval::ConsumerRecord;
/// /// Keeps only the partition key.
/// struct Keys;
/// impl Transformer for Keys {
///     fn transform(&self, _: &RecordContext<'_>, record: &ConsumerRecord, out: &mut Vec<u8>) -> Result<(), TransformError> {
///         out.extend_from_slice(record.partition_key.as_bytes());
///         out.push(b'\n');
///         Ok(())
///     }
/// }
/// ```
pub trait Transformer: Send + Sync + 'static {
    /// Appends the item for `record` to `out`.
    fn transform(
        &self,
        context: &RecordContext<'_>,
        record: &ConsumerRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError>;
}

/// How [`JsonLines`] stored a payload (`data_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    /// A JSON object or array, embedded as it was (byte for byte).
    Json,
    /// UTF-8 text, as a JSON string.
    Text,
    /// Anything else, base64 (standard alphabet, padded).
    Base64,
}

/// The default transformer: one JSON object per line.
///
/// ```text
/// {"stream":"orders","shard_id":"shardId-000000000001","sequence_number":"4959…","sub_sequence_number":0,
///  "partition_key":"user-7","approximate_arrival_timestamp":"2026-01-20T07:30:00.123Z","data_encoding":"json","data":{"id":7}}
/// ```
///
/// `explicit_hash_key` is present when the record had one. A payload that is
/// a JSON object or array without line breaks is embedded verbatim (so
/// replaying it gives back the same bytes); other UTF-8 is a string; the rest
/// is base64.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// One line of [`JsonLines`] output, read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonRecord {
    /// The stream.
    pub stream: String,
    /// The shard.
    pub shard_id: String,
    /// Sequence number.
    pub sequence_number: String,
    /// Sub-sequence number (index within a KPL aggregate).
    pub sub_sequence_number: u64,
    /// Partition key.
    pub partition_key: String,
    /// Explicit hash key, if the record had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    /// When Kinesis received the record (RFC 3339, UTC, milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_arrival_timestamp: Option<String>,
    /// How `data` is stored.
    pub data_encoding: DataEncoding,
    /// The payload.
    pub data: Box<RawValue>,
}

impl JsonRecord {
    /// The original payload bytes.
    pub fn payload(&self) -> Result<Vec<u8>, serde_json::Error> {
        Ok(match self.data_encoding {
            DataEncoding::Json => self.data.get().as_bytes().to_vec(),
            DataEncoding::Text => serde_json::from_str::<String>(self.data.get())?.into_bytes(),
            DataEncoding::Base64 => {
                let text: String = serde_json::from_str(self.data.get())?;
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(serde::de::Error::custom)?
            }
        })
    }

    /// The arrival time, if present and well-formed.
    pub fn arrival(&self) -> Option<DateTime<Utc>> {
        self.approximate_arrival_timestamp
            .as_deref()?
            .parse::<DateTime<Utc>>()
            .ok()
    }
}

/// Milliseconds since the epoch (0 for times before it).
pub fn epoch_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn is_json_document(data: &[u8]) -> bool {
    matches!(data.first(), Some(b'{' | b'['))
        && matches!(data.last(), Some(b'}' | b']'))
        && !data.contains(&b'\n')
        && !data.contains(&b'\r')
        && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

fn push_json_str(out: &mut Vec<u8>, value: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

impl Transformer for JsonLines {
    fn transform(
        &self,
        context: &RecordContext<'_>,
        record: &ConsumerRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        out.extend_from_slice(b"{\"stream\":");
        push_json_str(out, context.stream);
        out.extend_from_slice(b",\"shard_id\":");
        push_json_str(out, context.shard_id);
        out.extend_from_slice(b",\"sequence_number\":");
        push_json_str(out, &record.sequence_number);
        out.extend_from_slice(b",\"sub_sequence_number\":");
        out.extend_from_slice(record.sub_sequence_number.to_string().as_bytes());
        out.extend_from_slice(b",\"partition_key\":");
        push_json_str(out, &record.partition_key);
        if let Some(ehk) = &record.explicit_hash_key {
            out.extend_from_slice(b",\"explicit_hash_key\":");
            push_json_str(out, ehk);
        }
        if let Some(arrival) = record.approximate_arrival {
            let arrival: DateTime<Utc> = arrival.into();
            out.extend_from_slice(b",\"approximate_arrival_timestamp\":\"");
            out.extend_from_slice(
                arrival
                    .to_rfc3339_opts(SecondsFormat::Millis, true)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        let data = &record.data[..];
        if is_json_document(data) {
            out.extend_from_slice(b",\"data_encoding\":\"json\",\"data\":");
            out.extend_from_slice(data);
        } else if let Ok(text) = std::str::from_utf8(data) {
            out.extend_from_slice(b",\"data_encoding\":\"text\",\"data\":");
            push_json_str(out, text);
        } else {
            out.extend_from_slice(b",\"data_encoding\":\"base64\",\"data\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// The payload bytes followed by a delimiter (default `\n`), as s3-journal
/// writes entries.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Written after each payload. Default: `b"\n"`.
    pub delimiter: Vec<u8>,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            delimiter: b"\n".to_vec(),
        }
    }
}

impl Transformer for Raw {
    fn transform(
        &self,
        _context: &RecordContext<'_>,
        record: &ConsumerRecord,
        out: &mut Vec<u8>,
    ) -> Result<(), TransformError> {
        out.extend_from_slice(&record.data);
        out.extend_from_slice(&self.delimiter);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn record(data: &[u8], ehk: Option<&str>) -> ConsumerRecord {
        ConsumerRecord {
            sequence_number: "4959".into(),
            sub_sequence_number: 2,
            aggregated: true,
            partition_key: "pk \"quoted\"".into(),
            explicit_hash_key: ehk.map(Into::into),
            data: Bytes::copy_from_slice(data),
            approximate_arrival: Some(
                UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            ),
        }
    }

    fn line(data: &[u8]) -> (String, JsonRecord) {
        let mut out = Vec::new();
        let context = RecordContext {
            stream: "s",
            shard_id: "shardId-0",
        };
        JsonLines
            .transform(&context, &record(data, Some("42")), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let parsed: JsonRecord = serde_json::from_str(text.trim_end()).unwrap();
        (text, parsed)
    }

    #[test]
    fn payloads_are_embedded_by_kind() {
        let (text, parsed) = line(br#"{"b":1,"a":[2]}"#);
        assert!(text.contains(r#""data":{"b":1,"a":[2]}"#), "{text}");
        assert_eq!(parsed.data_encoding, DataEncoding::Json);
        assert_eq!(parsed.explicit_hash_key.as_deref(), Some("42"));
        assert_eq!(
            parsed.approximate_arrival_timestamp.as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(line(b"plain text").1.data_encoding, DataEncoding::Text);
        assert_eq!(line(b"{\"multi\":\n1}").1.data_encoding, DataEncoding::Text);
        assert_eq!(line(&[0xff, 0, 1]).1.data_encoding, DataEncoding::Base64);
    }

    proptest! {
        #[test]
        fn every_payload_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, parsed) = line(&data);
            prop_assert_eq!(parsed.payload().unwrap(), data);
            prop_assert_eq!(parsed.partition_key, "pk \"quoted\"");
        }

        #[test]
        fn text_payloads_round_trip(text in "\\PC{0,50}") {
            let (_, parsed) = line(text.as_bytes());
            prop_assert_eq!(parsed.payload().unwrap(), text.as_bytes());
        }
    }
}
