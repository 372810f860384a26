//! Per-service endpoints carried inside an `SdkConfig`.
//!
//! `AWS_ENDPOINT_URL_KINESIS` and friends reach the SDK's service clients
//! through `SdkConfig::service_config`; we fill the same slot, so a client built
//! with `aws_sdk_kinesis::Client::new(&sdk_config)` resolves its endpoint the
//! way it would from the environment.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::config::Credentials;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

/// The endpoint URLs of the three services a test or example talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Kinesis Data Streams endpoint, e.g. `http://127.0.0.1:41234`.
    pub kinesis: String,
    /// S3 endpoint (path-style addressing).
    pub s3: String,
    /// DynamoDB endpoint.
    pub dynamodb: String,
}

/// Region every local back end uses.
pub const REGION: &str = "us-east-1";
/// Access key id every local back end accepts.
pub const ACCESS_KEY_ID: &str = "test";
/// Secret key every local back end accepts.
pub const SECRET_ACCESS_KEY: &str = "test";
/// A second key pair the embedded S3 accepts: a secret distinctive enough to
/// search a process's output for (the tests that check that no log line
/// carries credentials).
pub const SECOND_ACCESS_KEY_ID: &str = "kinesis-rs-second-key";
/// The second key pair's secret.
pub const SECOND_SECRET_ACCESS_KEY: &str = "fake-SECRET-k3y-9c1f0e2d7b";

impl Endpoints {
    /// An `SdkConfig` with static test credentials, region `us-east-1`, and
    /// these endpoints as the per-service endpoint URLs.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                    ACCESS_KEY_ID,
                    SECRET_ACCESS_KEY,
                    None,
                    None,
                    "local-aws",
                )),
            )
            .service_config(self.clone())
            .build()
    }

    /// The environment a child process needs to reach these endpoints with
    /// the standard AWS configuration (`AWS_ENDPOINT_URL_*`, credentials,
    /// region).
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_KINESIS", self.kinesis.clone()),
            ("AWS_ENDPOINT_URL_S3", self.s3.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

impl LoadServiceConfig for Endpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.profile() != "endpoint_url" {
            return None;
        }
        match key.service_id() {
            "Kinesis" => Some(self.kinesis.clone()),
            "S3" => Some(self.s3.clone()),
            "DynamoDB" => Some(self.dynamodb.clone()),
            _ => None,
        }
    }
}
