//! Puts user records read from stdin with `kpl`, as `KplProducer` (the AWS
//! KPL's harness in `interop/java/kpl`) does with `--quiet true`: the
//! process the producer benchmark (`benches/producer_peers.rs`) measures
//! beside the AWS KPL's.
//!
//! Input: one record per line, `<base64 partition key> <explicit hash key
//! or -> <base64 data>`. Output, when stdin has ended and every record is
//! answered: `{"event":"done","records":N,"ok":N,"failed":M}`.
//!
//! `kpl_put STREAM [RATE_LIMIT_PERCENT]`; endpoints, region and credentials
//! the standard way (`AWS_ENDPOINT_URL_KINESIS`, …).

use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kpl::{Producer, ProducerConfig, UserRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let stream = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: kpl_put STREAM [RATE_LIMIT_PERCENT]"))?;
    let rate_limit = args.next().map(|v| v.parse()).transpose()?.unwrap_or(150);
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let producer = Producer::builder()
        .sdk_config(&sdk_config)
        .config(ProducerConfig {
            rate_limit,
            ..ProducerConfig::default()
        })
        .streams([stream.clone()])
        .build()?;
    // Results are awaited by a second task as they come, in order.
    let (pending, mut results) = tokio::sync::mpsc::channel(100_000);
    let collector = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(result) = results.recv().await {
            let result: kpl::PendingResult = result;
            match result.await {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
        (ok, failed)
    });
    // Reading stdin blocks: a blocking thread feeds the async side.
    let (lines, mut input) = tokio::sync::mpsc::channel::<String>(10_000);
    let reader = tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut records = 0u64;
    while let Some(line) = input.recv().await {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(key), Some(hash_key), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!(
                "line {}: expected `<b64 key> <hash key or -> <b64 data>`",
                records + 1
            );
        };
        let mut record = UserRecord::new(
            &stream,
            String::from_utf8(B64.decode(key)?)?,
            B64.decode(data)?,
        );
        if hash_key != "-" {
            record = record.with_explicit_hash_key(hash_key.parse()?);
        }
        pending
            .send(producer.add_user_record(record).await?)
            .await
            .map_err(|_| anyhow::anyhow!("the result collector stopped"))?;
        records += 1;
    }
    reader.await?;
    drop(pending);
    let (ok, failed) = collector.await?;
    producer.shutdown().await?;
    println!(r#"{{"event":"done","records":{records},"ok":{ok},"failed":{failed}}}"#);
    Ok(())
}
