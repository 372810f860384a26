#!/usr/bin/env python3
"""Count records with a kcl-rs (PyPI `kcl-rs`, import kcl_rs) polling consumer:
the process the consumer benchmark (integration-tests/benches/consumer_peers.rs)
measures beside `kcl` (src/bin/kcl_count.rs) and the Java KCL
(KclConsumer --count N). kcl-rs is installed by scripts/peers.

usage: count.py STREAM N [--app NAME] [--worker ID] [--timeout S]
                [--max-records M] [--idle-ms MS] [--shard-sync-ms MS]
                [--position TRIM_HORIZON|LATEST] [--no-checkpoint]
Times are from process start (before `import kcl_rs`). Default app name is
fresh per run (kclrs-count-STREAM-PID), i.e. a cold start with a new lease table.

Prints one JSON line to stdout once N records were delivered:
  {"records":N,"seconds_to_first":..,"seconds_to_all":..,...}
then shuts the scheduler down gracefully and exits 0 (exit 1 on timeout).
Endpoints/credentials come from the standard AWS env (kcl-rs' own
`endpoint_url=` applies one URL to every service, so per-service overrides
must use AWS_ENDPOINT_URL_KINESIS / _DYNAMODB / _CLOUDWATCH):
  AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:45670
  AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:45660
  AWS_ENDPOINT_URL_CLOUDWATCH=http://127.0.0.1:45660   (moto answers 'service error': a WARN per 60 s flush)
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
"""
import argparse, json, os, sys, threading, time

T0 = time.monotonic()

import kcl_rs
from kcl_rs import CheckpointError, RecordProcessorBase, Scheduler

ap = argparse.ArgumentParser()
ap.add_argument("stream")
ap.add_argument("n", type=int)
ap.add_argument("--app", default=None)
ap.add_argument("--worker", default=None)
ap.add_argument("--timeout", type=float, default=600.0)
ap.add_argument("--max-records", type=int, default=None)
ap.add_argument("--idle-ms", type=int, default=None)
ap.add_argument("--position", default="TRIM_HORIZON")
ap.add_argument("--no-checkpoint", action="store_true")
ap.add_argument("--shard-sync-ms", type=int, default=None,
                help="shard_sync_interval_millis; also the idle sleep after the start-up shard sync (default 60000)")
args = ap.parse_args()
app = args.app or f"kclrs-count-{args.stream}-{os.getpid()}"

lock = threading.Lock()
done = threading.Event()
state = {"count": 0, "first": None, "all": None, "batches": 0, "subseq": 0,
         "ckpt_err": 0, "ckpt_s": 0.0, "shards": set()}


class Counter(RecordProcessorBase):
    def initialize(self, i):
        with lock:
            state["shards"].add(i.shard_id)

    def process_records(self, p):
        recs = p.records
        now = time.monotonic()
        with lock:
            if state["first"] is None and recs:
                state["first"] = now
            state["count"] += len(recs)
            state["batches"] += 1
            state["subseq"] += sum(1 for r in recs if r.sub_sequence_number)
            if state["count"] >= args.n and state["all"] is None:
                state["all"] = now
                done.set()
        if recs and not args.no_checkpoint:
            c0 = time.monotonic()
            try:
                p.checkpointer.checkpoint()
            except CheckpointError as e:
                with lock:
                    state["ckpt_err"] += 1
                print(f"checkpoint failed: {e.value}", file=sys.stderr)
            with lock:
                state["ckpt_s"] += time.monotonic() - c0

    def lease_lost(self, _):
        pass

    def shard_ended(self, s):
        s.checkpointer.checkpoint()

    def shutdown_requested(self, s):
        try:
            s.checkpointer.checkpoint()
        except CheckpointError as e:
            print(f"final checkpoint failed: {e.value}", file=sys.stderr)


kw = {}
if args.max_records is not None:
    kw["max_records"] = args.max_records
if args.shard_sync_ms is not None:
    kw["shard_sync_interval_millis"] = args.shard_sync_ms
if args.idle_ms is not None:
    kw["idle_time_between_reads_millis"] = args.idle_ms
sched = Scheduler(
    stream_name=args.stream,
    application_name=app,
    record_processor_factory=Counter,
    worker_identifier=args.worker or f"kclrs-worker-{os.getpid()}",
    region=os.environ.get("AWS_REGION", "us-east-1"),
    initial_position=args.position,
    retrieval_mode="POLLING",
    **kw,
)
sched.start()
t_started = time.monotonic()
ok = done.wait(args.timeout)
with lock:
    out = {
        "records": state["count"],
        "seconds_to_first": round(state["first"] - T0, 3) if state["first"] else None,
        "seconds_to_all": round(state["all"] - T0, 3) if state["all"] else None,
        "drain_seconds": round(state["all"] - state["first"], 3) if state["all"] else None,
        "batches": state["batches"],
        "shards": len(state["shards"]),
        "deaggregated_records": state["subseq"],
        "checkpoint_errors": state["ckpt_err"],
        "checkpoint_seconds": round(state["ckpt_s"], 3),
        "start_call_seconds": round(t_started - T0, 3),
        "app": app,
        "timed_out": not ok,
    }
out["event"] = "drained"
print(json.dumps(out), flush=True)
t_sd = time.monotonic()
sched.shutdown()
print(f"shutdown took {time.monotonic() - t_sd:.2f}s", file=sys.stderr)
sys.exit(0 if ok else 1)
