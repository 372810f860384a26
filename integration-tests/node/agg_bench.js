#!/usr/bin/env node
/*
 * KPL aggregation throughput of the npm package `aws-kinesis-agg`.
 *
 *     NODE_PATH=<dir>/node_modules node integration-tests/node/agg_bench.js INPUT ROUNDS
 *
 * where <dir> is an `npm install --prefix <dir> aws-kinesis-agg@4.2.8` (4.2.8:
 * newest release, engines node >=16, works on Node 20).
 *
 * INPUT: lines `<partition key>\t<base64 data>` (user records, no explicit hash
 * keys).  They are loaded into memory once; then each round
 *
 *  (a) aggregates all of them into aggregates of at most 51,200 bytes.  The
 *      package's documented aggregate() and RecordAggregator.aggregateRecords()
 *      only know a hard-coded bound (1 MiB - 20: KINESIS_MAX_PAYLOAD_BYTES in
 *      lib/kpl-agg.js, not settable), so this uses the synchronous
 *      RecordAggregator methods the package exports: calculateUserRecordSize()
 *      (the package's own protobuf size computation) + totalBytes decide when
 *      the next record would take the aggregate (magic 4 + protobuf + MD5 16)
 *      over 51,200 bytes; then build() (protobuf encode + MD5) emits it and
 *      addUserRecord() adds the record.  No callbacks, nothing asynchronous:
 *      the timer covers exactly that loop.  Every aggregate is then checked to
 *      be <= 51,200 bytes as serialized;
 *  (b) deaggregates every aggregate with deaggregate(kinesisRecord,
 *      computeChecksums = true, perRecord, afterRecord): the package's
 *      callback API, which runs synchronously (deaggregateSync is the same
 *      call plus a per-aggregate array), MD5 checked.  The Kinesis record
 *      objects ({partitionKey, sequenceNumber, data: base64}) are built before
 *      the timer starts.  Afterwards the user records are checked against the
 *      input (count, order, partition keys, data, sub-sequence numbers).
 *
 * Prints one JSON line per round:
 *   {"peer":"node","round":i,"records":N,"aggregates":A,
 *    "aggregate_seconds":x,"deaggregate_seconds":y}
 *
 * Exit status: 0 on success, 2 on bad usage or input, 1 when a check fails.
 */
'use strict';

const fs = require('fs');

const PROG = 'agg_bench';
const MAX_AGGREGATE_BYTES = 51200; // the bound the Rust aggregator uses
const OVERHEAD = 4 + 16; // KPL magic + MD5 trailer

function fail(msg, code = 1) {
  process.stderr.write(`${PROG}: error: ${msg}\n`);
  process.exit(code);
}

let agg;
try {
  agg = require('aws-kinesis-agg');
} catch (e) {
  fail(`cannot load aws-kinesis-agg (${e.message}); npm install --prefix DIR ` +
    'aws-kinesis-agg and run with NODE_PATH=DIR/node_modules');
}
const { RecordAggregator, deaggregate } = agg;

function load(path) {
  const records = [];
  const lines = fs.readFileSync(path, 'utf8').split('\n');
  const b64re = /^[A-Za-z0-9+/]*={0,2}$/;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line === '') continue;
    const tab = line.indexOf('\t');
    if (tab <= 0) fail(`${path}:${i + 1}: expected '<partition key>\\t<base64 data>'`, 2);
    const b64 = line.slice(tab + 1);
    if (b64.length % 4 !== 0 || !b64re.test(b64)) fail(`${path}:${i + 1}: bad base64`, 2);
    records.push({ partitionKey: line.slice(0, tab), data: Buffer.from(b64, 'base64') });
  }
  if (records.length === 0) fail(`${path}: no records`, 2);
  return records;
}

function seconds(t0, t1) {
  return Number(t1 - t0) / 1e9;
}

function aggregate(records) {
  const aggregator = new RecordAggregator();
  const out = [];
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < records.length; i++) {
    const record = records[i];
    if (aggregator.length() > 0 &&
        OVERHEAD + aggregator.totalBytes + aggregator.calculateUserRecordSize(record) >
          MAX_AGGREGATE_BYTES) {
      out.push(aggregator.build());
    }
    aggregator.addUserRecord(record);
  }
  if (aggregator.length() > 0) out.push(aggregator.build());
  const t1 = process.hrtime.bigint();
  return [seconds(t0, t1), out];
}

function checkAggregates(aggregates) {
  aggregates.forEach((a, i) => {
    if (a.data.length > MAX_AGGREGATE_BYTES) {
      fail(`aggregate ${i}: ${a.data.length} bytes (bound ${MAX_AGGREGATE_BYTES})`);
    }
  });
}

function deaggregateAll(kinesisRecords) {
  const users = [];
  const errors = [];
  let done = 0;
  const perRecord = (err, userRecord) => {
    if (err) errors.push(err);
    else users.push(userRecord);
  };
  const afterRecord = (err) => {
    if (err) errors.push(err);
    else done++;
  };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < kinesisRecords.length; i++) {
    deaggregate(kinesisRecords[i], true, perRecord, afterRecord);
  }
  const t1 = process.hrtime.bigint();
  if (errors.length > 0) fail(`deaggregation failed: ${errors[0]}`);
  // deaggregate() is synchronous: every afterRecord must have run already
  if (done !== kinesisRecords.length) {
    fail(`deaggregation finished ${done} of ${kinesisRecords.length} aggregates synchronously`);
  }
  return [seconds(t0, t1), users];
}

function checkDeaggregated(records, users, aggregates) {
  if (users.length !== records.length) {
    fail(`deaggregated ${users.length} user records, input has ${records.length}`);
  }
  let u = 0;
  for (let a = 0; a < aggregates.length; a++) {
    let sub = 0;
    while (u < users.length && users[u].sequenceNumber === String(a)) {
      const ur = users[u];
      const want = records[u];
      // a record that is not KPL aggregated comes back without subSequenceNumber
      if (ur.subSequenceNumber !== sub || ur.partitionKey !== want.partitionKey ||
          ur.data !== want.data.toString('base64')) {
        fail(`deaggregated user record (seq ${a}, sub ${sub}) does not match the input`);
      }
      u++;
      sub++;
    }
    if (sub === 0) fail(`aggregate ${a} gave no user records`);
  }
  if (u !== users.length) fail('deaggregated user records out of order');
}

function main() {
  const args = process.argv.slice(2);
  if (args.length !== 2) fail('usage: agg_bench.js INPUT ROUNDS', 2);
  const rounds = Number(args[1]);
  if (!Number.isInteger(rounds) || rounds < 1) {
    fail(`ROUNDS must be a positive integer, got '${args[1]}'`, 2);
  }
  const records = load(args[0]);

  for (let round = 0; round < rounds; round++) {
    const [aggSeconds, aggregates] = aggregate(records);
    checkAggregates(aggregates);

    const kinesisRecords = aggregates.map((a, i) => ({
      partitionKey: a.partitionKey,
      sequenceNumber: String(i),
      data: a.data.toString('base64'),
    }));
    const [deaggSeconds, users] = deaggregateAll(kinesisRecords);
    checkDeaggregated(records, users, aggregates);

    process.stdout.write(JSON.stringify({
      peer: 'node',
      round,
      records: records.length,
      aggregates: aggregates.length,
      aggregate_seconds: aggSeconds,
      deaggregate_seconds: deaggSeconds,
    }) + '\n');
  }
}

main();
