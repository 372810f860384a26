//! The MultiLang protocol's messages, one JSON object per line, exactly as
//! the Java daemon's Jackson writes them (`software.amazon.kinesis.multilang.
//! messages.*`): `action` first, every field present, `null` written,
//! record data in standard base64 with padding, arrival times in epoch
//! milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::retrieval::ConsumerRecord;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A message from the daemon to a child (`InitializeMessage`,
/// `ProcessRecordsMessage`, `LeaseLostMessage`, `ShardEndedMessage`,
/// `ShutdownRequestedMessage`, and `CheckpointMessage` as the answer to a
/// child's checkpoint).
#[derive(Debug, Serialize)]
#[serde(tag = "action")]
pub enum DaemonMessage<'a> {
    /// Before the first records: the shard and the lease's checkpoint
    /// (which may be a sentinel such as `TRIM_HORIZON`).
    #[serde(rename = "initialize", rename_all = "camelCase")]
    Initialize {
        /// The shard.
        shard_id: &'a str,
        /// The checkpoint's sequence number or sentinel name.
        sequence_number: Option<&'a str>,
        /// The checkpoint's sub-sequence number.
        sub_sequence_number: Option<u64>,
    },
    /// A batch of deaggregated records.
    #[serde(rename = "processRecords", rename_all = "camelCase")]
    ProcessRecords {
        /// The records.
        records: Vec<JsonRecord<'a>>,
        /// How far behind the tip of the shard the batch is.
        millis_behind_latest: Option<i64>,
    },
    /// Another worker took the lease: stop, checkpoints would fail.
    #[serde(rename = "leaseLost")]
    LeaseLost,
    /// The shard ended: the child must checkpoint (SHARD_END).
    #[serde(rename = "shardEnded")]
    ShardEnded,
    /// Graceful shutdown (or handoff): a last chance to checkpoint.
    #[serde(rename = "shutdownRequested")]
    ShutdownRequested,
    /// The answer to a child's checkpoint: its position, and the Java
    /// exception's simple name when it failed.
    #[serde(rename = "checkpoint", rename_all = "camelCase")]
    Checkpoint {
        /// The sequence number asked for.
        sequence_number: Option<&'a str>,
        /// The sub-sequence number asked for.
        sub_sequence_number: Option<i64>,
        /// `null` on success, else e.g. `ShutdownException`.
        error: Option<&'a str>,
    },
}

impl<'a> DaemonMessage<'a> {
    /// The `action` this message carries (what the child's status answers).
    pub fn action(&self) -> &'static str {
        match self {
            Self::Initialize { .. } => "initialize",
            Self::ProcessRecords { .. } => "processRecords",
            Self::LeaseLost => "leaseLost",
            Self::ShardEnded => "shardEnded",
            Self::ShutdownRequested => "shutdownRequested",
            Self::Checkpoint { .. } => "checkpoint",
        }
    }

    /// The initialize message for a lease's checkpoint.
    pub fn initialize(shard_id: &'a str, checkpoint: &'a ExtendedSequenceNumber) -> Self {
        Self::Initialize {
            shard_id,
            sequence_number: Some(checkpoint.position().as_str()),
            sub_sequence_number: Some(checkpoint.sub_sequence_number()),
        }
    }

    /// The processRecords message for a batch.
    pub fn process_records(
        records: &'a [ConsumerRecord],
        millis_behind_latest: Option<i64>,
    ) -> Self {
        Self::ProcessRecords {
            records: records.iter().map(JsonRecord::from).collect(),
            millis_behind_latest,
        }
    }

    /// The message as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising these types cannot fail: no map with non-string keys,
        // no fallible Serialize impl.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A record as the Java daemon's `JsonFriendlyRecord` writes it.
#[derive(Debug)]
pub struct JsonRecord<'a>(&'a ConsumerRecord);

impl<'a> From<&'a ConsumerRecord> for JsonRecord<'a> {
    fn from(record: &'a ConsumerRecord) -> Self {
        Self(record)
    }
}

impl Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let record = self.0;
        let mut s = serializer.serialize_struct("JsonFriendlyRecord", 6)?;
        s.serialize_field("data", &Base64(&record.data))?;
        s.serialize_field("partitionKey", &record.partition_key)?;
        s.serialize_field("sequenceNumber", &record.sequence_number)?;
        s.serialize_field(
            "approximateArrivalTimestamp",
            &record.approximate_arrival.map(epoch_millis),
        )?;
        s.serialize_field("subSequenceNumber", &record.sub_sequence_number)?;
        s.serialize_field("action", "record")?;
        s.end()
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &STANDARD))
    }
}

fn epoch_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A message from a child. Lines that are not one of these are skipped, as
/// the Java daemon skips them (children print blank lines around their
/// messages, and sometimes debugging output).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action")]
pub enum ChildMessage {
    /// The child handled the message whose action it names.
    #[serde(rename = "status", rename_all = "camelCase")]
    Status {
        /// The action handled.
        #[serde(default)]
        response_for: Option<String>,
    },
    /// The child asks to checkpoint: at the last record delivered when
    /// `sequence_number` is null, else at that position (sub-sequence 0
    /// when only a sequence number is given, as Java's `checkpoint(String)`).
    #[serde(rename = "checkpoint", rename_all = "camelCase")]
    Checkpoint {
        /// The sequence number (Jackson also takes a JSON number here).
        #[serde(default, deserialize_with = "string_or_number")]
        sequence_number: Option<String>,
        /// The sub-sequence number (a number, or a string of digits).
        #[serde(default, deserialize_with = "integer_or_string")]
        sub_sequence_number: Option<i64>,
    },
    /// A checkpoint whose fields do not read (a sequence number that is an
    /// object, or a JSON number too large to be exact; a sub-sequence number
    /// that is not a whole number): answered `IllegalArgumentException`, so
    /// the child is not left waiting for an answer.
    #[serde(skip)]
    MalformedCheckpoint,
    /// Any other action (a message type the daemon does not take from a
    /// child): skipped.
    #[serde(other)]
    Other,
}

impl ChildMessage {
    /// Parses one line of a child's output; `None` for a line that is not a
    /// message (blank, not JSON, no known `action`).
    ///
    /// ```
    /// use kcl_multilang::messages::ChildMessage;
    /// assert_eq!(
    ///     ChildMessage::parse(br#"{"action":"status","responseFor":"initialize"}"#),
    ///     Some(ChildMessage::Status { response_for: Some("initialize".into()) }),
    /// );
    /// assert_eq!(ChildMessage::parse(b"debug output"), None);
    /// ```
    pub fn parse(line: &[u8]) -> Option<Self> {
        let trimmed = line.trim_ascii();
        if trimmed.first() != Some(&b'{') {
            return None;
        }
        match serde_json::from_slice(trimmed) {
            Ok(Self::Other) => None,
            Ok(message) => Some(message),
            Err(_) => {
                let value: serde_json::Value = serde_json::from_slice(trimmed).ok()?;
                (value["action"] == "checkpoint").then_some(Self::MalformedCheckpoint)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Integer(i64),
    Unsigned(u64),
    Float(#[allow(dead_code)] f64),
}

/// A sequence number: a string, or a JSON integer that is exact. A larger
/// number (a real sequence number has ~56 digits) arrives as a float whose
/// digits are not the child's: refused rather than rounded, since a rounded
/// position could checkpoint past records not yet processed.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<StringOrNumber>::deserialize(d)? {
        None => Ok(None),
        Some(StringOrNumber::String(s)) => Ok(Some(s)),
        Some(StringOrNumber::Integer(n)) => Ok(Some(n.to_string())),
        Some(StringOrNumber::Unsigned(n)) => Ok(Some(n.to_string())),
        Some(StringOrNumber::Float(_)) => Err(D::Error::custom(
            "a sequence number given as a JSON number too large to be exact",
        )),
    }
}

fn integer_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<StringOrNumber>::deserialize(d)? {
        None => Ok(None),
        Some(StringOrNumber::Integer(n)) => Ok(Some(n)),
        Some(StringOrNumber::Unsigned(n)) => i64::try_from(n).map(Some).map_err(D::Error::custom),
        Some(StringOrNumber::String(s)) => s.trim().parse().map(Some).map_err(D::Error::custom),
        Some(StringOrNumber::Float(_)) => Err(D::Error::custom("a sub-sequence number is whole")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn record(seq: &str, sub: u64, data: &[u8]) -> ConsumerRecord {
        ConsumerRecord {
            sequence_number: seq.into(),
            sub_sequence_number: sub,
            aggregated: sub > 0,
            partition_key: "pk".into(),
            explicit_hash_key: None,
            data: Bytes::copy_from_slice(data),
            approximate_arrival: Some(UNIX_EPOCH + Duration::from_millis(1_732_838_400_123)),
        }
    }

    #[test]
    fn messages_are_written_as_the_java_daemon_writes_them() {
        let checkpoint = ExtendedSequenceNumber::TRIM_HORIZON;
        assert_eq!(
            String::from_utf8(
                DaemonMessage::initialize("shardId-000000000001", &checkpoint).to_line()
            )
            .unwrap(),
            "{\"action\":\"initialize\",\"shardId\":\"shardId-000000000001\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0}\n"
        );
        let records = [record(
            "49590338271490256608559692538361571095921575989136588898",
            2,
            b"hello",
        )];
        let line = DaemonMessage::process_records(&records, None).to_line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGVsbG8=\",\"partitionKey\":\"pk\",\
             \"sequenceNumber\":\"49590338271490256608559692538361571095921575989136588898\",\
             \"approximateArrivalTimestamp\":1732838400123,\"subSequenceNumber\":2,\"action\":\"record\"}],\
             \"millisBehindLatest\":null}\n"
        );
        assert_eq!(
            DaemonMessage::LeaseLost.to_line(),
            b"{\"action\":\"leaseLost\"}\n"
        );
        assert_eq!(
            DaemonMessage::ShardEnded.to_line(),
            b"{\"action\":\"shardEnded\"}\n"
        );
        assert_eq!(
            DaemonMessage::ShutdownRequested.to_line(),
            b"{\"action\":\"shutdownRequested\"}\n"
        );
        let answer = DaemonMessage::Checkpoint {
            sequence_number: None,
            sub_sequence_number: None,
            error: Some("ShutdownException"),
        };
        assert_eq!(
            answer.to_line(),
            b"{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null,\"error\":\"ShutdownException\"}\n"
        );
    }

    #[test]
    fn child_messages_of_kclpy_and_node_are_read() {
        // kclpy: both numbers; Node: only the sequence number; either may
        // write numbers where Jackson would coerce them.
        assert_eq!(
            ChildMessage::parse(
                br#"{"action": "checkpoint", "sequenceNumber": "123", "subSequenceNumber": 4}"#
            ),
            Some(ChildMessage::Checkpoint {
                sequence_number: Some("123".into()),
                sub_sequence_number: Some(4)
            })
        );
        assert_eq!(
            ChildMessage::parse(br#"{"action":"checkpoint","sequenceNumber":123}"#),
            Some(ChildMessage::Checkpoint {
                sequence_number: Some("123".into()),
                sub_sequence_number: None
            })
        );
        assert_eq!(
            ChildMessage::parse(
                br#"{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":"7"}"#
            ),
            Some(ChildMessage::Checkpoint {
                sequence_number: None,
                sub_sequence_number: Some(7)
            })
        );
        assert_eq!(
            ChildMessage::parse(
                br#"  {"action":"status","responseFor":"processRecords","extra":1}  "#
            ),
            Some(ChildMessage::Status {
                response_for: Some("processRecords".into())
            })
        );
        for skipped in [
            &b""[..],
            b"   ",
            b"hello",
            b"{not json",
            br#"{"action":"initialize"}"#,
            b"[1]",
            br#"{"no":"action"}"#,
        ] {
            assert_eq!(
                ChildMessage::parse(skipped),
                None,
                "{:?}",
                String::from_utf8_lossy(skipped)
            );
        }
    }

    proptest::proptest! {
        /// Whatever a child writes, reading it never panics.
        #[test]
        fn any_child_line_is_read_or_skipped(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = ChildMessage::parse(&line);
        }

        /// Record data of any bytes survives the trip through base64.
        #[test]
        fn record_data_round_trips(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let records = [record("1", 0, &data)];
            let line = DaemonMessage::process_records(&records, Some(5)).to_line();
            let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let encoded = value["records"][0]["data"].as_str().unwrap();
            use base64::Engine;
            proptest::prop_assert_eq!(STANDARD.decode(encoded).unwrap(), data);
        }
    }
}
