"""A MultiLang child that records the protocol itself, for comparing two
daemons: every line the daemon writes to it is appended, verbatim, to
$MULTILANG_RECORD_DIR/<shardId>.<pid>.jsonl. It checkpoints after each
processRecords batch and at shardEnded and shutdownRequested (sequence null:
the last record delivered), and answers each action with its status.

$MULTILANG_FAULTS makes it misbehave once per shard, at its first batch of
records: `shardId-000000000001=hang,shardId-000000000002=bad-status` (hang:
never answer; bad-status: answer for another action; exit: exit 3). A
marker file in the record directory keeps the shard's next child sane.
$MULTILANG_PROBE_CHECKPOINTS=1 makes it also ask for checkpoints the daemon
must refuse: one during initialize, and at its first batch one at a
sequence number that is not a number and one past the records delivered.
Pure Python, standard library only."""
import json
import os
import sys
import time

record_dir = os.environ["MULTILANG_RECORD_DIR"]
out = None
shard = None
pending = []
probe = os.environ.get("MULTILANG_PROBE_CHECKPOINTS") == "1"
probed = False


def keep(line):
    global out
    if out is None:
        pending.append(line)
    else:
        out.write(line + "\n")
        out.flush()


def send(message):
    sys.stdout.write("\n" + json.dumps(message) + "\n")
    sys.stdout.flush()


def checkpoint(sequence_number=None, sub_sequence_number=None):
    send({"action": "checkpoint", "sequenceNumber": sequence_number, "subSequenceNumber": sub_sequence_number})
    while True:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        line = line.strip()
        if line:
            keep(line)
            return json.loads(line)


for raw in sys.stdin:
    line = raw.strip()
    if not line:
        continue
    keep(line)
    message = json.loads(line)
    action = message["action"]
    if action == "initialize":
        shard = message["shardId"]
        path = os.path.join(record_dir, "%s.%d.jsonl" % (message["shardId"], os.getpid()))
        out = open(path, "a")
        for kept in pending:
            out.write(kept + "\n")
        pending = []
        out.flush()
        if probe:
            checkpoint()
    elif action == "processRecords" and message["records"]:
        fault = dict(f.split("=", 1) for f in os.environ.get("MULTILANG_FAULTS", "").split(",") if "=" in f)
        marker = os.path.join(record_dir, "fault-%s" % shard)
        if shard in fault and not os.path.exists(marker):
            open(marker, "w").close()
            if fault[shard] == "hang":
                time.sleep(3600)
            elif fault[shard] == "bad-status":
                send({"action": "status", "responseFor": "initialize"})
                continue
            elif fault[shard] == "exit":
                sys.exit(3)
    if action == "processRecords" and message["records"] and probe and not probed:
        probed = True
        checkpoint("not-a-number", 0)
        checkpoint("9" * 60, 0)
    if action in ("processRecords", "shardEnded", "shutdownRequested"):
        if action != "processRecords" or message["records"]:
            checkpoint()
    send({"action": "status", "responseFor": action})
