//! Positions in a shard: sequence numbers with sub-sequence numbers, and the
//! sentinels the Java KCL writes in place of a sequence number.

use std::cmp::Ordering;
use std::fmt;

/// Where a lease's processing stands, as the Java KCL's
/// `ExtendedSequenceNumber` records it: a sequence number (or a sentinel)
/// and a sub-sequence number (the index within a KPL aggregate).
///
/// ```
/// use kcl::checkpoint::{ExtendedSequenceNumber, Position};
/// let a = ExtendedSequenceNumber::new("49590338271490256608559692538361571095921575989136588898", 3);
/// let b = ExtendedSequenceNumber::new("49590338271490256608559692538361571095921575989136588898", 4);
/// assert!(a < b);
/// assert_eq!(ExtendedSequenceNumber::SHARD_END.position(), &Position::ShardEnd);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtendedSequenceNumber {
    position: Position,
    sub_sequence_number: u64,
}

/// A sequence number or one of the KCL's sentinel values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// Start at the oldest record (`TRIM_HORIZON`).
    TrimHorizon,
    /// Start after the newest record (`LATEST`).
    Latest,
    /// Start at a timestamp given in the consumer configuration (`AT_TIMESTAMP`).
    AtTimestamp,
    /// The shard has been read to its end (`SHARD_END`).
    ShardEnd,
    /// A Kinesis sequence number (decimal digits).
    Sequence(String),
}

impl Position {
    /// The string the Java KCL stores in the `checkpoint` attribute.
    pub fn as_str(&self) -> &str {
        match self {
            Position::TrimHorizon => "TRIM_HORIZON",
            Position::Latest => "LATEST",
            Position::AtTimestamp => "AT_TIMESTAMP",
            Position::ShardEnd => "SHARD_END",
            Position::Sequence(sequence) => sequence,
        }
    }

    /// Parses the stored form: a sentinel name or a sequence number.
    pub fn parse(value: &str) -> Self {
        match value {
            "TRIM_HORIZON" => Position::TrimHorizon,
            "LATEST" => Position::Latest,
            "AT_TIMESTAMP" => Position::AtTimestamp,
            "SHARD_END" => Position::ShardEnd,
            other => Position::Sequence(other.to_owned()),
        }
    }
}

impl ExtendedSequenceNumber {
    /// `TRIM_HORIZON`, sub-sequence 0.
    pub const TRIM_HORIZON: Self = Self::sentinel(Position::TrimHorizon);
    /// `LATEST`, sub-sequence 0.
    pub const LATEST: Self = Self::sentinel(Position::Latest);
    /// `AT_TIMESTAMP`, sub-sequence 0.
    pub const AT_TIMESTAMP: Self = Self::sentinel(Position::AtTimestamp);
    /// `SHARD_END`, sub-sequence 0.
    pub const SHARD_END: Self = Self::sentinel(Position::ShardEnd);

    const fn sentinel(position: Position) -> Self {
        Self {
            position,
            sub_sequence_number: 0,
        }
    }

    /// A position at a sequence number and sub-sequence number.
    pub fn new(sequence_number: impl Into<String>, sub_sequence_number: u64) -> Self {
        Self {
            position: Position::parse(&sequence_number.into()),
            sub_sequence_number,
        }
    }

    /// A position from its stored parts.
    pub fn from_parts(position: Position, sub_sequence_number: u64) -> Self {
        Self {
            position,
            sub_sequence_number,
        }
    }

    /// The sequence number or sentinel.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// The sub-sequence number.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// The sequence number, when this is not a sentinel.
    pub fn sequence_number(&self) -> Option<&str> {
        match &self.position {
            Position::Sequence(sequence) => Some(sequence),
            _ => None,
        }
    }
}

impl fmt::Display for ExtendedSequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.position.as_str(), self.sub_sequence_number)
    }
}

/// Sentinels order as the Java KCL orders them: TRIM_HORIZON and
/// AT_TIMESTAMP before every sequence number, LATEST and SHARD_END after.
/// Sequence numbers compare numerically, then by sub-sequence number.
impl Ord for ExtendedSequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(position: &Position) -> u8 {
            match position {
                Position::TrimHorizon | Position::AtTimestamp => 0,
                Position::Sequence(_) => 1,
                Position::Latest => 2,
                Position::ShardEnd => 3,
            }
        }
        match (&self.position, &other.position) {
            (Position::Sequence(a), Position::Sequence(b)) => {
                compare_positions(a, self.sub_sequence_number, b, other.sub_sequence_number)
            }
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

/// Orders two (sequence number, sub-sequence number) positions as
/// [`ExtendedSequenceNumber`] does, without building one: sequence numbers
/// numerically (decimal digits), then sub-sequence numbers.
pub(crate) fn compare_positions(a: &str, a_sub: u64, b: &str, b_sub: u64) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len()
        .cmp(&b.len())
        .then_with(|| a.cmp(b))
        .then_with(|| a_sub.cmp(&b_sub))
}

impl PartialOrd for ExtendedSequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically_then_by_sub_sequence() {
        let small = ExtendedSequenceNumber::new("9", 5);
        let big = ExtendedSequenceNumber::new("10", 0);
        assert!(small < big);
        assert!(ExtendedSequenceNumber::new("10", 1) > big);
        assert!(ExtendedSequenceNumber::TRIM_HORIZON < small);
        assert!(ExtendedSequenceNumber::SHARD_END > big);
        for sentinel in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END"] {
            assert_eq!(Position::parse(sentinel).as_str(), sentinel);
        }
    }
}
