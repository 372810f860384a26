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
    pub(crate) fn dynamo(operation: &'static str, error: impl std::error::Error) -> Self {
        LeaseError::Dynamo {
            operation,
            message: crate::error_chain(&error),
        }
    }
}
