"""A MultiLang child that records the protocol itself, for comparing two
daemons: every line the daemon writes to it is appended, verbatim, to
$MULTILANG_RECORD_DIR/<shardId>.<pid>.jsonl. It checkpoints after each
processRecords batch and at shardEnded and shutdownRequested (sequence null:
the last record delivered), and answers each action with its status.
Pure Python, standard library only."""
import json
import os
import sys

record_dir = os.environ["MULTILANG_RECORD_DIR"]
out = None
pending = []


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


def checkpoint():
    send({"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None})
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
        path = os.path.join(record_dir, "%s.%d.jsonl" % (message["shardId"], os.getpid()))
        out = open(path, "a")
        for kept in pending:
            out.write(kept + "\n")
        pending = []
        out.flush()
    elif action in ("processRecords", "shardEnded", "shutdownRequested"):
        if action != "processRecords" or message["records"]:
            checkpoint()
    send({"action": "status", "responseFor": action})
