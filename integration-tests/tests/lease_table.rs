//! The lease table against the embedded DynamoDB: the Java KCL's item schema,
//! asserted on the raw items, and the conditional operations.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{LocalAws, unique_name};
use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::lease::{Lease, LeaseTable};

async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("leaseKey", AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item()
        .cloned()
        .expect("item exists")
}

fn kind(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Ss(_) => "SS",
        _ => "other",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_written_with_the_kcl_schema_and_changed_only_under_their_conditions() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("app");
    let table = LeaseTable::new(client.clone(), &name);
    assert!(table.create_if_missing().await.expect("create"));
    assert!(
        !table.create_if_missing().await.expect("exists"),
        "a second call finds it"
    );

    let mut lease = Lease::new("shardId-000000000002", ExtendedSequenceNumber::TRIM_HORIZON);
    lease.parent_shard_ids = vec!["shardId-000000000000".into()];
    lease.hash_key_range = Some(("0".into(), "85070591730234615865843651857942052863".into()));
    assert!(table.create_lease_if_absent(&lease).await.expect("put"));
    assert!(
        !table
            .create_lease_if_absent(&lease)
            .await
            .expect("put again"),
        "never overwritten"
    );

    let item = raw_item(&client, &name, &lease.lease_key).await;
    let expected = [
        ("leaseKey", "S"),
        ("leaseCounter", "N"),
        ("checkpoint", "S"),
        ("checkpointSubSequenceNumber", "N"),
        ("ownerSwitchesSinceCheckpoint", "N"),
        ("parentShardId", "SS"),
        ("startingHashKey", "S"),
        ("endingHashKey", "S"),
    ];
    for (attribute, type_) in expected {
        assert_eq!(item.get(attribute).map(kind), Some(type_), "{attribute}");
    }
    assert_eq!(item["checkpoint"].as_s().expect("S"), "TRIM_HORIZON");
    assert!(!item.contains_key("leaseOwner"), "a new lease is free");

    // Take, then a stale take by another worker loses.
    let mut stale = lease.clone();
    assert!(table.take(&mut lease, "worker-1").await.expect("take"));
    assert!(
        !table
            .take(&mut stale, "worker-2")
            .await
            .expect("stale take")
    );
    // Renew by the owner; a renewal by anyone else fails.
    assert!(table.renew(&mut lease, "worker-1").await.expect("renew"));
    let mut other = lease.clone();
    assert!(
        !table
            .renew(&mut other, "worker-2")
            .await
            .expect("foreign renew")
    );

    // A prepared checkpoint with application state, then the checkpoint.
    let prepared = ExtendedSequenceNumber::new(
        "49590338271490256608559692538361571095921575989136588898",
        3,
    );
    assert!(
        table
            .checkpoint(
                &mut lease,
                "worker-1",
                &ExtendedSequenceNumber::TRIM_HORIZON,
                Some((&prepared, Some(b"object-key")))
            )
            .await
            .expect("prepare")
    );
    let item = raw_item(&client, &name, &lease.lease_key).await;
    assert_eq!(
        item["pendingCheckpoint"].as_s().expect("S"),
        prepared.sequence_number().expect("seq")
    );
    assert_eq!(
        item["pendingCheckpointSubSequenceNumber"]
            .as_n()
            .expect("N"),
        "3"
    );
    assert_eq!(
        item["pendingCheckpointState"].as_b().expect("B").as_ref(),
        b"object-key"
    );
    assert!(
        table
            .checkpoint(&mut lease, "worker-1", &prepared, None)
            .await
            .expect("checkpoint")
    );
    let item = raw_item(&client, &name, &lease.lease_key).await;
    assert_eq!(item["checkpointSubSequenceNumber"].as_n().expect("N"), "3");
    assert_eq!(item["ownerSwitchesSinceCheckpoint"].as_n().expect("N"), "0");
    assert!(
        !item.contains_key("pendingCheckpoint") && !item.contains_key("pendingCheckpointState")
    );
    assert_eq!(
        table.get_lease(&lease.lease_key).await.expect("get"),
        Some(lease.clone())
    );

    // A checkpoint with a stale counter fails; eviction frees the lease.
    let mut stale = lease.clone();
    stale.lease_counter -= 1;
    assert!(
        !table
            .checkpoint(&mut stale, "worker-1", &prepared, None)
            .await
            .expect("stale checkpoint")
    );
    assert!(table.evict(&mut lease, "worker-1").await.expect("evict"));
    let stored = table
        .get_lease(&lease.lease_key)
        .await
        .expect("get")
        .expect("lease");
    assert_eq!(stored.lease_owner, None);
    assert_eq!(stored, lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_written_by_the_java_kcl_is_read_with_its_checkpoints() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("java-app");
    let table = LeaseTable::new(client.clone(), &name);
    table.create_if_missing().await.expect("create");
    // Items as the Java KCL 2.x/3.x writes them, including attributes this
    // crate does not use.
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    let items = [
        vec![
            ("leaseKey", s("shardId-000000000000")),
            ("leaseOwner", s("java-worker-7")),
            ("leaseCounter", n("1234")),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            (
                "childShardIds",
                AttributeValue::Ss(vec![
                    "shardId-000000000001".into(),
                    "shardId-000000000002".into(),
                ]),
            ),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("340282366920938463463374607431768211455"),
            ),
            ("throughputKBps", n("0.5")),
            ("entityType", s("LEASE")),
        ],
        vec![
            ("leaseKey", s("shardId-000000000001")),
            ("leaseCounter", n("7")),
            (
                "checkpoint",
                s("49590338271490256608559692538361571095921575989136588898"),
            ),
            ("checkpointSubSequenceNumber", n("12")),
            ("ownerSwitchesSinceCheckpoint", n("1")),
            (
                "parentShardId",
                AttributeValue::Ss(vec!["shardId-000000000000".into()]),
            ),
        ],
    ];
    for item in items {
        client
            .put_item()
            .table_name(&name)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
            .await
            .expect("PutItem");
    }
    let mut leases = table.list_leases().await.expect("list");
    leases.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].checkpoint, ExtendedSequenceNumber::SHARD_END);
    assert_eq!(leases[0].lease_owner.as_deref(), Some("java-worker-7"));
    assert_eq!(leases[0].lease_counter, 1234);
    assert_eq!(leases[0].child_shard_ids.len(), 2);
    assert_eq!(
        leases[1].checkpoint,
        ExtendedSequenceNumber::new(
            "49590338271490256608559692538361571095921575989136588898",
            12
        )
    );
    assert_eq!(
        leases[1].parent_shard_ids,
        vec!["shardId-000000000000".to_owned()]
    );
    // Our conditional take works on the Java worker's item.
    let mut lease = leases[0].clone();
    assert!(table.take(&mut lease, "rust-worker-1").await.expect("take"));
}

/// `ownerSwitchesSinceCheckpoint` counts changes of owner, as the Java KCL
/// counts them: not the first take of a free lease, nor a worker retaking
/// its own (issue 11, defect 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_switches_count_only_a_change_of_owner() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("app");
    let table = LeaseTable::new(client.clone(), &name);
    table.create_if_missing().await.expect("create");
    let mut lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    table.create_lease_if_absent(&lease).await.expect("put");
    let switches = |item: &HashMap<String, AttributeValue>| {
        item["ownerSwitchesSinceCheckpoint"]
            .as_n()
            .expect("N")
            .clone()
    };

    assert!(table.take(&mut lease, "worker-1").await.expect("take"));
    let item = raw_item(&client, &name, &lease.lease_key).await;
    assert_eq!(switches(&item), "0", "a first take is not a switch");
    assert_eq!(lease.owner_switches_since_checkpoint, 0);
    assert!(table.take(&mut lease, "worker-1").await.expect("retake"));
    assert_eq!(
        switches(&raw_item(&client, &name, &lease.lease_key).await),
        "0"
    );
    assert!(table.take(&mut lease, "worker-2").await.expect("steal"));
    assert_eq!(
        switches(&raw_item(&client, &name, &lease.lease_key).await),
        "1"
    );
    assert_eq!(lease.owner_switches_since_checkpoint, 1);
    assert_eq!(
        table.get_lease(&lease.lease_key).await.expect("get"),
        Some(lease)
    );
}

/// Items that are not leases (KCL 3.5 keeps worker metrics, its leader lock
/// and migration state in the lease table) are skipped, and a lease item
/// that cannot be read is skipped and reported — never the whole scan
/// failed (issue 11, defect 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_skips_items_that_are_not_leases_and_reports_unreadable_ones() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("app");
    let table = LeaseTable::new(client.clone(), &name);
    table.create_if_missing().await.expect("create");
    let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    table.create_lease_if_absent(&lease).await.expect("put");
    for item in integration_tests::resources::foreign_lease_table_items() {
        client
            .put_item()
            .table_name(&name)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }
    let scan = table.scan().await.expect("scan");
    assert_eq!(scan.leases, vec![lease]);
    assert_eq!(scan.unreadable, vec!["shardId-000000000009".to_owned()]);
    assert_eq!(table.list_leases().await.expect("list").len(), 1);
}

/// Java KCL 3.x fleets mark a lease in graceful handoff with
/// `checkpointOwner` and balance by `throughputKBps` (issue 14): a renewal
/// is refused while the mark is there (a leader assigned the lease away), a
/// take removes it (a fresh assignment, as the Java KCL 3.x's take), a
/// renewal writes `throughputKBps` as a number, and no update removes an
/// attribute this crate does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcl3_handoff_marks_and_throughput_are_honoured() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("app");
    let table = LeaseTable::new(client.clone(), &name);
    table.create_if_missing().await.expect("create");
    let mut lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    table.create_lease_if_absent(&lease).await.expect("put");
    let key = lease.lease_key.clone();
    let set = |attribute: &str, value: AttributeValue| {
        client
            .update_item()
            .table_name(&name)
            .key("leaseKey", AttributeValue::S(key.clone()))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", value)
            .send()
    };
    set("someFutureAttribute", AttributeValue::S("kept".into()))
        .await
        .expect("update");

    assert!(table.take(&mut lease, "rust-1").await.expect("take"));
    assert!(
        table
            .renew_reporting(&mut lease, "rust-1", Some(12.3456))
            .await
            .expect("renew")
    );
    let item = raw_item(&client, &name, &lease.lease_key).await;
    assert_eq!(item["throughputKBps"], AttributeValue::N("12.346".into()));
    assert_eq!(
        item["someFutureAttribute"],
        AttributeValue::S("kept".into())
    );

    // A leader hands the lease over: owner the next worker, we the
    // checkpoint owner. Our renewal is refused.
    set("checkpointOwner", AttributeValue::S("rust-1".into()))
        .await
        .expect("update");
    assert!(!table.renew(&mut lease, "rust-1").await.expect("renew"));
    let read = table
        .get_lease(&lease.lease_key)
        .await
        .expect("get")
        .expect("lease");
    assert_eq!(read.checkpoint_owner.as_deref(), Some("rust-1"));

    // A take (of an expired lease) is a fresh assignment: the mark goes,
    // the unknown attribute stays.
    let mut taken = read;
    assert!(table.take(&mut taken, "rust-2").await.expect("take"));
    assert_eq!(taken.checkpoint_owner, None);
    let item = raw_item(&client, &name, &lease.lease_key).await;
    assert!(!item.contains_key("checkpointOwner"), "{item:?}");
    assert_eq!(item["leaseOwner"], AttributeValue::S("rust-2".into()));
    assert_eq!(
        item["someFutureAttribute"],
        AttributeValue::S("kept".into())
    );
    assert_eq!(item["throughputKBps"], AttributeValue::N("12.346".into()));
    aws.shutdown().await;
}

/// In a Java KCL 3.5 fleet's single-table format, new leases carry
/// `entityType` `LEASE`, as the Java KCL writes its own (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leases_are_tagged_in_a_single_table_fleet() {
    let aws = LocalAws::start().await.expect("local AWS");
    let client = aws.dynamodb_client();
    let name = unique_name("app");
    let table = LeaseTable::new(client.clone(), &name);
    table.create_if_missing().await.expect("create");
    let untagged = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    table.create_lease_if_absent(&untagged).await.expect("put");
    assert!(
        !raw_item(&client, &name, &untagged.lease_key)
            .await
            .contains_key("entityType")
    );
    table.tag_new_leases(true);
    let tagged = Lease::new("shardId-000000000001", ExtendedSequenceNumber::TRIM_HORIZON);
    table.create_lease_if_absent(&tagged).await.expect("put");
    let item = raw_item(&client, &name, &tagged.lease_key).await;
    assert_eq!(item["entityType"], AttributeValue::S("LEASE".into()));
    assert!(Lease::is_lease_item(&item));
    aws.shutdown().await;
}
