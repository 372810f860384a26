#!/usr/bin/env python3
"""KPL aggregation throughput of the PyPI package ``aws_kinesis_agg``.

    $KINESIS_AGG_PYTHON integration-tests/python/agg_bench.py INPUT ROUNDS

KINESIS_AGG_PYTHON is the venv python that ``scripts/local-aws install`` creates
(.local-aws/venv/bin/python: aws-kinesis-agg, protobuf, six).

INPUT: lines ``<partition key>\\t<base64 data>`` (user records, no explicit hash
keys).  They are loaded into memory once; then each round

  (a) aggregates all of them with ``RecordAggregator(max_size=51200)``:
      add_user_record() for each record, get_contents() (protobuf
      serialization + MD5) for each full AggRecord it hands back, and
      clear_and_get() + get_contents() for the last one.  Only that loop is
      timed.  Afterwards every aggregate is checked to be <= 51,200 bytes both as
      the package counts it (AggRecord.get_size_bytes(): magic + computed
      protobuf size + MD5) and as actually serialized;
  (b) deaggregates every aggregate with ``deaggregate_records()`` (MD5 checked
      by the package), one call per aggregate, each given as a Lambda Kinesis
      event record dict built before the timer starts (data base64-encoded, as
      the package expects).  Only the deaggregation calls are timed.
      Afterwards the user records are checked against the input (count, order,
      partition keys, data, and that each came out of an aggregate).

Prints one JSON line per round:
  {"peer":"python","round":i,"records":N,"aggregates":A,
   "aggregate_seconds":x,"deaggregate_seconds":y}

Exit status: 0 on success, 2 on bad usage or input, 1 when a check fails.
"""

import base64
import binascii
import json
import sys
import time

PROG = "agg_bench"
MAX_AGGREGATE_BYTES = 51_200  # the bound the Rust aggregator uses


def fail(msg, code=1):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    # deaggregator/aggregator first: they put the package's own directory on
    # sys.path, which messages_pb2 needs for its bare `import config_pb2`.
    from aws_kinesis_agg.deaggregator import deaggregate_records
    from aws_kinesis_agg.aggregator import RecordAggregator
except ImportError as e:  # pragma: no cover - environment problem
    fail(
        f"cannot import aws_kinesis_agg ({e}); run scripts/local-aws install and "
        "call this script with $KINESIS_AGG_PYTHON",
    )


def load(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            pk, sep, b64 = line.partition("\t")
            if not sep or not pk:
                fail(f"{path}:{lineno}: expected '<partition key>\\t<base64 data>'", 2)
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as e:
                fail(f"{path}:{lineno}: bad base64: {e}", 2)
            records.append((pk, data))
    if not records:
        fail(f"{path}: no records", 2)
    return records


def aggregate(records):
    """Returns (seconds, [AggRecord], [blob])."""
    aggregator = RecordAggregator(max_size=MAX_AGGREGATE_BYTES)
    add = aggregator.add_user_record
    full_records = []
    blobs = []
    t0 = time.perf_counter()
    for pk, data in records:
        full = add(pk, data)
        if full is not None:
            full_records.append(full)
            blobs.append(full.get_contents()[2])
    last = aggregator.clear_and_get()
    if last is not None:
        full_records.append(last)
        blobs.append(last.get_contents()[2])
    seconds = time.perf_counter() - t0
    return seconds, full_records, blobs


def check_aggregates(n, full_records, blobs):
    total = 0
    for i, (rec, blob) in enumerate(zip(full_records, blobs)):
        counted = rec.get_size_bytes()
        if counted > MAX_AGGREGATE_BYTES or len(blob) > MAX_AGGREGATE_BYTES:
            fail(f"aggregate {i}: {counted} bytes as counted, {len(blob)} serialized "
                 f"(bound {MAX_AGGREGATE_BYTES})")
        if len(blob) > counted:
            fail(f"aggregate {i}: serialized {len(blob)} bytes > {counted} counted")
        users = rec.get_num_user_records()
        if users == 0:  # the package drops a record it cannot fit this way
            fail(f"aggregate {i} is empty")
        total += users
    if total != n:
        fail(f"aggregates hold {total} user records, input has {n}")


def lambda_events(blobs):
    events = []
    for i, blob in enumerate(blobs):
        events.append({
            "eventSource": "aws:kinesis",
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "sequenceNumber": str(i),
                "approximateArrivalTimestamp": 0,
                "partitionKey": "agg",
                "data": base64.b64encode(blob).decode("ascii"),
            },
        })
    return events


def deaggregate(events):
    """Returns (seconds, [list of user records per aggregate])."""
    out = []
    append = out.append
    t0 = time.perf_counter()
    for event in events:
        append(deaggregate_records(event))
    seconds = time.perf_counter() - t0
    return seconds, out


def check_deaggregated(records_b64, per_aggregate):
    n = sum(len(users) for users in per_aggregate)
    if n != len(records_b64):
        fail(f"deaggregated {n} user records, input has {len(records_b64)}")
    it = iter(records_b64)
    for users in per_aggregate:
        for sub, ur in enumerate(users):
            k = ur["kinesis"]
            pk, b64 = next(it)
            data = k["data"]
            if isinstance(data, bytes):
                data = data.decode("ascii")
            # not aggregated = bad MD5 / bad protobuf (the package passes the
            # aggregate through as is)
            if not k.get("aggregated") or k.get("subSequenceNumber") != sub \
                    or k["partitionKey"] != pk or data != b64:
                fail(f"deaggregated user record (seq {k.get('sequenceNumber')}, "
                     f"sub {sub}) does not match the input")


def main():
    if len(sys.argv) != 3:
        fail("usage: agg_bench.py INPUT ROUNDS", 2)
    try:
        rounds = int(sys.argv[2])
        if rounds < 1:
            raise ValueError
    except ValueError:
        fail(f"ROUNDS must be a positive integer, got {sys.argv[2]!r}", 2)

    records = load(sys.argv[1])
    records_b64 = [(pk, base64.b64encode(data).decode("ascii")) for pk, data in records]
    n = len(records)

    for rnd in range(rounds):
        agg_seconds, full_records, blobs = aggregate(records)
        check_aggregates(n, full_records, blobs)
        del full_records

        events = lambda_events(blobs)
        deagg_seconds, per_aggregate = deaggregate(events)
        check_deaggregated(records_b64, per_aggregate)
        del per_aggregate, events

        sys.stdout.write(json.dumps({
            "peer": "python",
            "round": rnd,
            "records": n,
            "aggregates": len(blobs),
            "aggregate_seconds": agg_seconds,
            "deaggregate_seconds": deagg_seconds,
        }, separators=(",", ":")) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
