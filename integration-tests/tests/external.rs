//! What the embedded back ends get wrong, on the external emulators started by
//! `scripts/local-aws` (kinesis-local for Kinesis, moto for S3 and DynamoDB),
//! and a smoke test of the whole produce → consume path on them.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use integration_tests::{Endpoints, Error, ExternalAws, resources, unique_name};
use kpl::{Producer, UserRecord};

async fn external() -> ExternalAws {
    ExternalAws::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_missing_external_emulator_is_a_clear_error_not_a_hang() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let started = Instant::now();
    let error = ExternalAws::connect_to(Endpoints {
        kinesis: url.clone(),
        s3: url.clone(),
        dynamodb: url,
    })
    .await
    .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        error,
        Error::ExternalNotRunning {
            service: "Kinesis",
            ..
        }
    ));
    assert!(
        error.to_string().contains("scripts/local-aws start"),
        "{error}"
    );
}

#[tokio::test]
async fn list_shards_follows_next_token() {
    let aws = external().await;
    let client = aws.kinesis_client();
    let stream = unique_name("paging");
    resources::create_stream(&client, &stream, 7)
        .await
        .expect("stream");
    let shards = kpl::shard_map::list_shards_paged(&client, &stream, 2)
        .await
        .expect("ListShards");
    let mut ids: Vec<_> = shards.iter().map(|s| s.shard_id().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "{ids:?}");
    resources::delete_stream(&client, &stream)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_split_parent_ends_with_child_shards() {
    let aws = external().await;
    let client = aws.kinesis_client();
    let stream = unique_name("split");
    resources::create_stream(&client, &stream, 1)
        .await
        .expect("stream");
    let shards = kpl::shard_map::list_shards(&client, &stream)
        .await
        .expect("ListShards");
    let parent = shards[0].shard_id().to_owned();
    resources::split_shard(&client, &stream, &parent)
        .await
        .expect("SplitShard");
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(&stream)
        .shard_id(&parent)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("GetShardIterator")
        .shard_iterator;
    let mut children = Vec::new();
    for _ in 0..20 {
        let Some(current) = iterator else { break };
        let page = client
            .get_records()
            .shard_iterator(current)
            .send()
            .await
            .expect("GetRecords");
        children = page
            .child_shards()
            .iter()
            .map(|c| c.shard_id().to_owned())
            .collect();
        iterator = page.next_shard_iterator;
    }
    assert!(
        iterator.is_none(),
        "a closed shard ends with a null iterator"
    );
    assert_eq!(children.len(), 2, "ChildShards at the end of the parent");
    resources::delete_stream(&client, &stream)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn open_multipart_uploads_are_listed_and_aborted() {
    let aws = external().await;
    let s3 = aws.s3_client();
    let bucket = unique_name("multipart");
    resources::create_bucket(&s3, &bucket)
        .await
        .expect("bucket");
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("journal/host-000001.jsonl.gz")
        .send()
        .await
        .expect("CreateMultipartUpload");
    let upload_id = upload.upload_id().expect("upload id").to_owned();
    let listed = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .expect("ListMultipartUploads");
    assert!(
        listed
            .uploads()
            .iter()
            .any(|u| u.upload_id() == Some(upload_id.as_str()))
    );
    s3.abort_multipart_upload()
        .bucket(&bucket)
        .key("journal/host-000001.jsonl.gz")
        .upload_id(&upload_id)
        .send()
        .await
        .expect("AbortMultipartUpload");
    let listed = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .expect("ListMultipartUploads");
    assert!(listed.uploads().is_empty());
    resources::delete_bucket(&s3, &bucket)
        .await
        .expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_produce_and_read_back_on_the_external_emulators() {
    let aws = external().await;
    let client = aws.kinesis_client();
    let stream = unique_name("smoke");
    resources::create_stream(&client, &stream, 2)
        .await
        .expect("stream");
    let producer = Producer::builder()
        .sdk_config(aws.sdk_config())
        .build()
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..300 {
        let record = UserRecord::new(&stream, format!("pk-{}", i % 17), format!("record {i:04}"));
        pending.push(producer.add_user_record(record).await.expect("accepted"));
    }
    for result in futures::future::join_all(pending).await {
        result.expect("stored");
    }
    producer.shutdown().await.expect("shutdown");

    let mut seen: Vec<String> = resources::read_stream(&client, &stream)
        .await
        .expect("read back")
        .into_iter()
        .map(|stored| String::from_utf8(stored.record.data.to_vec()).expect("utf-8"))
        .collect();
    seen.sort();
    let expected: Vec<String> = (0..300).map(|i| format!("record {i:04}")).collect();
    assert_eq!(seen, expected);
    resources::delete_stream(&client, &stream)
        .await
        .expect("cleanup");
}
