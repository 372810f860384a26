//! Shard leases in DynamoDB, in the Java KCL 2.x table schema.
//!
//! - [`Lease`]: one item, with the KCL's attribute names and types;
//! - [`LeaseTable`]: the conditional operations workers use to create, renew,
//!   take, evict and checkpoint leases without trampling each other;
//! - [`LeaseTaker`]: which leases a worker should take or steal.

mod held;
mod item;
mod table;
mod taker;

pub(crate) use held::{HeldLease, Renewal};
pub use item::Lease;
pub use table::{LeaseScan, LeaseTable};
pub use taker::{LeaseTaker, TakePlan};

/// Errors of the lease table.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A DynamoDB call failed (other than a failed condition, which the
    /// operations report as `Ok(false)`).
    #[error("DynamoDB {operation} failed: {message}")]
    Dynamo {
        /// The operation.
        operation: &'static str,
        /// The SDK's error with its sources.
        message: String,
        /// The service's error code (`ResourceNotFoundException`, …), when
        /// it answered one.
        code: Option<String>,
    },
    /// An item in the table does not have the shape of a KCL lease.
    #[error("lease item {lease_key:?}: attribute {attribute} {problem}")]
    InvalidItem {
        /// The item's `leaseKey`, if readable.
        lease_key: String,
        /// The attribute.
        attribute: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A checkpoint's condition kept failing on a lease this worker still
    /// owns (its counter moved between every attempt).
    #[error(
        "lease {lease_key}: checkpoint not written after {attempts} attempts (the lease counter kept moving)"
    )]
    Contended {
        /// The lease.
        lease_key: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The table did not become ACTIVE in time.
    #[error("lease table {0} did not become ACTIVE")]
    TableNotActive(String),
}

impl LeaseError {
    pub(crate) fn dynamo(
        operation: &'static str,
        error: impl std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata,
    ) -> Self {
        LeaseError::Dynamo {
            operation,
            message: crate::error_chain(&error),
            code: error.code().map(str::to_owned),
        }
    }

    /// An error without a DynamoDB code to classify: a request that could
    /// not be built, or a Kinesis call of shard sync (whose errors the shard
    /// consumers classify as they read).
    pub(crate) fn uncoded(operation: &'static str, error: impl std::error::Error) -> Self {
        LeaseError::Dynamo {
            operation,
            message: crate::error_chain(&error),
            code: None,
        }
    }

    /// What to fix, when no retry can help (the table is gone, access is
    /// denied, the credentials are not valid); `None` for errors a retry
    /// may fix (throttling, 5xx, timeouts, a lost connection).
    ///
    /// ```
    /// use kcl::lease::LeaseError;
    /// let gone = LeaseError::Dynamo {
    ///     operation: "Scan",
    ///     message: "ResourceNotFoundException: Requested resource not found".into(),
    ///     code: Some("ResourceNotFoundException".into()),
    /// };
    /// assert!(gone.permanent().unwrap().contains("lease table"));
    /// let throttled = LeaseError::Dynamo {
    ///     operation: "Scan",
    ///     message: "slow down".into(),
    ///     code: Some("ProvisionedThroughputExceededException".into()),
    /// };
    /// assert!(throttled.permanent().is_none());
    /// ```
    pub fn permanent(&self) -> Option<&'static str> {
        let LeaseError::Dynamo {
            code: Some(code), ..
        } = self
        else {
            return None;
        };
        dynamo_permanent_cause(code)
    }
}

/// The fix for a DynamoDB error code no retry helps with.
fn dynamo_permanent_cause(code: &str) -> Option<&'static str> {
    match code {
        "ResourceNotFoundException" => Some(
            "the lease table does not exist (deleted, or in another region: check `application_name` \
             and the region); its checkpoints went with it: restore it, or restart to create it anew \
             (shards then start at the initial position)",
        ),
        "AccessDeniedException" => Some(
            "access denied on the lease table: give the role dynamodb:DescribeTable, CreateTable, \
             Scan, GetItem, PutItem, UpdateItem and DeleteItem on it",
        ),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException" => Some(
            "the credentials are not valid for DynamoDB: check the access key, secret and region",
        ),
        _ => None,
    }
}
