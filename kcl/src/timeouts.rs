//! Timeouts for the AWS clients the consumer builds: every call has a
//! bounded connect, attempt and operation time, so a stalled endpoint
//! (accepts the connection, never answers) is retried or surfaced instead of
//! hanging a lease renewal or a shard.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;

/// Connect, per-attempt and whole-operation (all attempts) timeouts of one
/// AWS client. A value set in the user's own `SdkConfig` (its
/// `timeout_config`) takes precedence over the one here.
///
/// ```
/// use std::time::Duration;
/// let timeouts = kcl::timeouts::ApiTimeouts::DYNAMODB;
/// assert_eq!(timeouts.attempt, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTimeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// One attempt of a call, from sending to the end of the answer.
    pub attempt: Duration,
    /// A whole call, its retries included.
    pub operation: Duration,
}

impl ApiTimeouts {
    /// For the lease table: connect 3 s, attempt 5 s, operation 15 s (lease
    /// renewals are also bounded by the renewal interval).
    pub const DYNAMODB: Self = Self {
        connect: Duration::from_secs(3),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(15),
    };
    /// For Kinesis: connect 3 s, attempt 10 s (a GetRecords of 10 MB),
    /// operation 30 s. An enhanced fan-out subscription's event stream is
    /// not bounded by them (only its opening call is).
    pub const KINESIS: Self = Self {
        connect: Duration::from_secs(3),
        attempt: Duration::from_secs(10),
        operation: Duration::from_secs(30),
    };
    /// For S3 uploads (used by the S3 connector and the journal): connect
    /// 5 s, attempt 120 s (a part of up to 5 GiB on a slow link is the
    /// caller's to tune), operation 10 min.
    pub const S3: Self = Self {
        connect: Duration::from_secs(5),
        attempt: Duration::from_secs(120),
        operation: Duration::from_secs(600),
    };

    /// `sdk_config` with these timeouts where it sets none of its own.
    ///
    /// ```
    /// let sdk_config = aws_config::SdkConfig::builder().build();
    /// let with = kcl::timeouts::ApiTimeouts::KINESIS.apply(&sdk_config);
    /// assert!(with.timeout_config().and_then(|t| t.operation_timeout()).is_some());
    /// ```
    pub fn apply(&self, sdk_config: &SdkConfig) -> SdkConfig {
        let ours = TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build();
        let mut timeouts = sdk_config
            .timeout_config()
            .cloned()
            .unwrap_or_else(|| TimeoutConfig::builder().build());
        timeouts.take_defaults_from(&ours);
        sdk_config.to_builder().timeout_config(timeouts).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_timeouts_win() {
        let own = SdkConfig::builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(99))
                    .build(),
            )
            .build();
        let merged = ApiTimeouts::DYNAMODB.apply(&own);
        let timeouts = merged.timeout_config().expect("timeouts");
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(99)));
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(3)));
    }
}
