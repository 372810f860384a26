#!/usr/bin/env python3
"""KPL aggregation interop helper built on the PyPI package ``aws_kinesis_agg``.

The Rust interop tests run it as

    $KINESIS_AGG_PYTHON integration-tests/python/agg_interop.py encode|decode

where KINESIS_AGG_PYTHON is the venv python that ``scripts/local-aws install``
creates (it has aws-kinesis-agg, protobuf and six).

encode
    stdin:  JSON lines ``{"pk": str, "ehk": str|null, "data": base64}`` (user records)
    stdout: one JSON line ``{"pk": str, "ehk": str|null, "data": base64}`` per
            Kinesis record, in order: each record the RecordAggregator hands back
            when it is full, then the last one from clear_and_get().  ``data`` is
            the aggregated blob exactly as AggRecord.get_contents() returns it
            (magic + protobuf + MD5), even when it holds one user record; pk/ehk
            are those of the first user record in it.
    option: --max-size N   RecordAggregator(max_size=N) (default and maximum 1 MiB)

decode
    stdin:  JSON lines ``{"pk": str, "ehk": str|null, "data": base64, "seq": str}``
            (Kinesis records as a consumer sees them)
    stdout: one JSON line per user record
            ``{"pk": str, "ehk": str|null, "data": base64, "seq": str, "subseq": int|null}``.
            A record that is not aggregated (no magic, bad MD5, bad protobuf) is
            passed through as is with ``"subseq": null`` (that is what the package does).
    option: --strict-ehk   report ehk null for a user record whose protobuf entry
            has no explicit_hash_key_index.  Without it the output is the
            package's: such a record gets explicit_hash_key_table[0] when the
            table is not empty.

Exit status: 0 on success, 2 on bad input or usage, 1 when the package fails.
"""

import argparse
import base64
import binascii
import contextlib
import io
import json
import sys

PROG = "agg_interop"


class BadInput(Exception):
    pass


def fail(msg, code=2):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import aws_kinesis_agg
    # aggregator/deaggregator first: they put the package's own directory on
    # sys.path, which messages_pb2 needs for its bare `import config_pb2`.
    from aws_kinesis_agg.aggregator import RecordAggregator
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records
    from aws_kinesis_agg import messages_pb2
except ImportError as e:  # pragma: no cover - environment problem
    fail(
        f"cannot import aws_kinesis_agg ({e}); run scripts/local-aws install and "
        "call this script with $KINESIS_AGG_PYTHON",
        code=1,
    )


def read_records(required):
    """Yield (line number, dict) for each non-blank JSON line on stdin."""
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"line {lineno}: not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise BadInput(f"line {lineno}: expected a JSON object")
        for key in required:
            if key not in obj:
                raise BadInput(f"line {lineno}: missing field {key!r}")
        pk = obj["pk"]
        if not isinstance(pk, str):
            raise BadInput(f"line {lineno}: 'pk' must be a string")
        ehk = obj.get("ehk")
        if ehk is not None and not isinstance(ehk, str):
            raise BadInput(f"line {lineno}: 'ehk' must be a string or null")
        if ehk == "":
            raise BadInput(
                f"line {lineno}: 'ehk' is an empty string; use null for no explicit hash key"
            )
        data = obj["data"]
        if not isinstance(data, str):
            raise BadInput(f"line {lineno}: 'data' must be a base64 string")
        try:
            obj["_bytes"] = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadInput(f"line {lineno}: 'data' is not valid base64: {e}") from None
        yield lineno, obj


def write(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def b64(data):
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- encode
def emit_agg_record(agg_record):
    pk, ehk, blob = agg_record.get_contents()
    write({"pk": pk, "ehk": ehk if ehk else None, "data": b64(blob)})


def encode(max_size):
    try:
        aggregator = RecordAggregator(max_size=max_size)
    except ValueError as e:
        raise BadInput(str(e)) from None
    for lineno, rec in read_records(("pk", "data")):
        pk, ehk, data = rec["pk"], rec.get("ehk"), rec["_bytes"]
        before = aggregator.get_num_user_records()
        try:
            if ehk is None:
                full = aggregator.add_user_record(pk, data)
            else:
                full = aggregator.add_user_record(pk, data, ehk)
        except ValueError as e:  # the record alone is bigger than max_size
            raise BadInput(f"line {lineno}: {e}") from None
        # The package silently drops a record that does not fit even an empty
        # aggregated record but is not bigger than max_size on its own (it then
        # hands back an empty AggRecord): catch that instead of losing data.
        if full is not None:
            if full.get_num_user_records() == 0 or aggregator.get_num_user_records() != 1:
                raise BadInput(
                    f"line {lineno}: record (pk={pk!r}, {len(data)} data bytes) is too big "
                    f"to fit in an aggregated record of at most {max_size} bytes"
                )
            emit_agg_record(full)
        elif aggregator.get_num_user_records() != before + 1:
            raise BadInput(f"line {lineno}: the aggregator did not take the record")
    last = aggregator.clear_and_get()
    if last is not None:
        emit_agg_record(last)


# ---------------------------------------------------------------- decode
def ehk_presence(blob):
    """For an aggregated blob, whether each user record has an explicit_hash_key_index."""
    body = blob[len(aws_kinesis_agg.MAGIC):-aws_kinesis_agg.DIGEST_SIZE]
    ar = messages_pb2.AggregatedRecord()
    ar.ParseFromString(body)
    return [mr.HasField("explicit_hash_key_index") for mr in ar.records]


def decode(strict_ehk):
    for lineno, rec in read_records(("pk", "data", "seq")):
        seq = rec["seq"]
        if not isinstance(seq, str):
            raise BadInput(f"line {lineno}: 'seq' must be a string")
        # Lambda-event-style record: the deaggregator reads kinesisSchemaVersion,
        # sequenceNumber and approximateArrivalTimestamp unconditionally.
        kinesis = {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": seq,
            "approximateArrivalTimestamp": 0,
            "partitionKey": rec["pk"],
            "data": b64(rec["_bytes"]),
        }
        if rec.get("ehk") is not None:
            kinesis["explicitHashKey"] = rec["ehk"]
        event = {"eventSource": "aws:kinesis", "kinesis": kinesis}

        # The package prints errors in the middle of a message to stderr and goes on
        # (dropping the rest of that message): treat anything it prints as a failure.
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            user_records = list(iter_deaggregate_records(event))
        if "ERROR:" in captured.getvalue():
            fail(f"line {lineno}: deaggregation failed:\n{captured.getvalue()}", code=1)
        sys.stderr.write(captured.getvalue())  # e.g. warnings: pass them on

        presence = None
        for i, ur in enumerate(user_records):
            k = ur["kinesis"]
            if k.get("aggregated"):
                ehk = k.get("explicitHashKey")
                if strict_ehk:
                    if presence is None:
                        presence = ehk_presence(rec["_bytes"])
                    if not presence[i]:
                        ehk = None
                data = k["data"]
                if isinstance(data, bytes):
                    data = data.decode("ascii")
                write({
                    "pk": k["partitionKey"],
                    "ehk": ehk,
                    "data": data,
                    "seq": k["sequenceNumber"],
                    "subseq": k["subSequenceNumber"],
                })
            else:
                write({
                    "pk": rec["pk"],
                    "ehk": rec.get("ehk"),
                    "data": b64(rec["_bytes"]),
                    "seq": seq,
                    "subseq": None,
                })


def main():
    parser = argparse.ArgumentParser(
        prog="agg_interop.py",
        description="KPL aggregation interop via the aws_kinesis_agg package (JSON lines on stdin/stdout).",
    )
    parser.add_argument("mode", choices=("encode", "decode"))
    parser.add_argument("--max-size", type=int, default=aws_kinesis_agg.MAX_BYTES_PER_RECORD,
                        help="encode: RecordAggregator max_size in bytes (default 1048576)")
    parser.add_argument("--strict-ehk", action="store_true",
                        help="decode: null ehk for user records without explicit_hash_key_index")
    args = parser.parse_args()
    try:
        if args.mode == "encode":
            encode(args.max_size)
        else:
            decode(args.strict_ehk)
    except BadInput as e:
        sys.stdout.flush()
        fail(str(e))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
