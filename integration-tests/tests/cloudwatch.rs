//! The CloudWatch publisher (`kinesis_ops::cloudwatch`) against moto_server,
//! one of the external emulators `scripts/local-aws` starts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use integration_tests::{ExternalAws, unique_name};

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// KCL and KPL metrics go under the Java libraries' names with their
/// dimensions; counters as increases, so two rounds sum to the total; more
/// metrics than one PutMetricData takes are sent in several calls.
#[tokio::test]
async fn metrics_are_published_under_the_kcl_names_as_increases() {
    let aws = ExternalAws::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(aws.sdk_config())
            .endpoint_url(&aws.endpoints().s3) // moto serves every service
            .build(),
    );
    let namespace = unique_name("archiver");
    let (recorder, mut publisher) = kinesis_ops::cloudwatch::recorder(client.clone(), &namespace);
    let shard0 = "shardId-000000000000";
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!(kcl::metrics::RECORDS_PROCESSED, "shard" => shard0).increment(5);
        metrics::counter!(kcl::metrics::RECORDS_PROCESSED, "shard" => "shardId-000000000001")
            .increment(7);
        metrics::gauge!(kcl::metrics::LEASES_HELD).set(2.0);
        metrics::gauge!(kcl::metrics::BEHIND_LATEST, "shard" => shard0).set(1.5);
        metrics::histogram!(kpl::metrics::BUFFERING_TIME).record(0.25);
        metrics::histogram!(kpl::metrics::BUFFERING_TIME).record(0.75);
        metrics::counter!(connector_s3::metrics::BYTES_UPLOADED).increment(1_000);
        for i in 0..1_200 {
            metrics::gauge!("spread", "i" => i.to_string()).set(f64::from(i));
        }
    });
    let sent = publisher.publish().await.expect("first round");
    assert_eq!(sent, 6 + 1_200);
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!(kcl::metrics::RECORDS_PROCESSED, "shard" => shard0).increment(3);
    });
    publisher.publish().await.expect("second round");

    let mut listed: BTreeMap<String, Vec<Vec<(String, String)>>> = BTreeMap::new();
    let mut pages = client
        .list_metrics()
        .namespace(&namespace)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for metric in page.expect("ListMetrics").metrics() {
            let mut dimensions: Vec<(String, String)> = metric
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_owned(),
                        d.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            dimensions.sort();
            listed
                .entry(metric.metric_name().unwrap_or_default().to_owned())
                .or_default()
                .push(dimensions);
        }
    }
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert!(
        listed["RecordsProcessed"].contains(&vec![
            pair("Operation", "ProcessTask"),
            pair("ShardId", shard0)
        ]),
        "{:?}",
        listed["RecordsProcessed"]
    );
    assert!(listed["MillisBehindLatest"].contains(&vec![
        pair("Operation", "ProcessTask"),
        pair("ShardId", shard0)
    ]));
    assert_eq!(
        listed["CurrentLeases"],
        vec![vec![pair("Operation", "RenewAllLeases")]]
    );
    assert!(listed.contains_key("BufferingTime"));
    assert!(listed.contains_key(connector_s3::metrics::BYTES_UPLOADED));
    assert_eq!(listed["spread"].len(), 1_200, "every batch arrived");

    let now = SystemTime::now();
    let statistics = client
        .get_metric_statistics()
        .namespace(&namespace)
        .metric_name("RecordsProcessed")
        .dimensions(dimension("Operation", "ProcessTask"))
        .dimensions(dimension("ShardId", shard0))
        .start_time((now - Duration::from_secs(600)).into())
        .end_time((now + Duration::from_secs(600)).into())
        .period(60)
        .statistics(Statistic::Sum)
        .send()
        .await
        .expect("GetMetricStatistics");
    let sum: f64 = statistics
        .datapoints()
        .iter()
        .filter_map(|point| point.sum())
        .sum();
    assert_eq!(sum, 8.0, "5 then an increase of 3: {statistics:?}");
}
