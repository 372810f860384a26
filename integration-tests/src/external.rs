//! The external emulators started by `scripts/local-aws`: moto_server (S3 and
//! DynamoDB) and kinesis-local (Kinesis).

use std::time::Duration;

use aws_config::SdkConfig;

use crate::{Endpoints, Error};

/// Environment variables `scripts/local-aws env` exports with the external
/// emulators' endpoints. Distinct from `AWS_ENDPOINT_URL_*` so that tests on
/// the embedded back ends are never pointed at the external ones by accident.
pub const ENDPOINT_VARS: [(&str, &str); 3] = [
    ("Kinesis", "LOCAL_AWS_KINESIS_ENDPOINT"),
    ("S3", "LOCAL_AWS_S3_ENDPOINT"),
    ("DynamoDB", "LOCAL_AWS_DYNAMODB_ENDPOINT"),
];

/// A connection to the external emulators.
#[derive(Debug, Clone)]
pub struct ExternalAws {
    endpoints: Endpoints,
    sdk_config: SdkConfig,
}

impl ExternalAws {
    /// Reads the endpoints from the environment and checks that each one
    /// accepts a TCP connection within two seconds; a clear error otherwise.
    pub async fn connect() -> Result<Self, Error> {
        let var = |(service, var): (&'static str, &str)| {
            std::env::var(var).map_err(|_| Error::ExternalNotRunning {
                service,
                detail: format!("{var} is not set"),
            })
        };
        let [kinesis, s3, dynamodb] = ENDPOINT_VARS;
        Self::connect_to(Endpoints {
            kinesis: var(kinesis)?,
            s3: var(s3)?,
            dynamodb: var(dynamodb)?,
        })
        .await
    }

    /// Like [`connect`](Self::connect), with the endpoints given.
    pub async fn connect_to(endpoints: Endpoints) -> Result<Self, Error> {
        check_reachable("Kinesis", &endpoints.kinesis).await?;
        check_reachable("S3", &endpoints.s3).await?;
        check_reachable("DynamoDB", &endpoints.dynamodb).await?;
        let sdk_config = endpoints.sdk_config();
        Ok(Self {
            endpoints,
            sdk_config,
        })
    }

    /// The configuration to build any AWS client from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// The endpoint URLs.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// A Kinesis client (kinesis-local).
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.sdk_config)
    }

    /// A DynamoDB client (moto).
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config)
    }

    /// An S3 client with path-style addressing (moto).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        crate::embedded::s3_client(&self.sdk_config)
    }
}

async fn check_reachable(service: &'static str, url: &str) -> Result<(), Error> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let not_running = |detail: String| Error::ExternalNotRunning { service, detail };
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(not_running(format!("{url}: {e}"))),
        Err(_) => Err(not_running(format!("{url}: connect timed out"))),
    }
}
