"""amazon-kclpy's own sample record processor, run unchanged.

`samples/sample_kclpy_app.py` of the amazon-kclpy sdist (installed by
scripts/peers) is imported as it is, and the package's own
`kcl.KCLProcess` speaks the protocol. The subclass only adds a record of
what the sample saw, for the test to check: one JSON line per event in
$MULTILANG_RECORD_DIR/kclpy-<pid>.jsonl. Every method calls the sample's.
"""
import base64
import json
import os

from amazon_kclpy import kcl
from samples.sample_kclpy_app import RecordProcessor


class RecordedSample(RecordProcessor):
    def __init__(self):
        super().__init__()
        path = os.path.join(os.environ["MULTILANG_RECORD_DIR"], "kclpy-%d.jsonl" % os.getpid())
        self._out = open(path, "a")
        self._shard = None

    def _write(self, **event):
        event["shard"] = self._shard
        event["pid"] = os.getpid()
        self._out.write(json.dumps(event) + "\n")
        self._out.flush()

    def initialize(self, initialize_input):
        self._shard = initialize_input.shard_id
        self._write(event="initialize", seq=initialize_input.sequence_number,
                    sub=initialize_input.sub_sequence_number)
        super().initialize(initialize_input)

    def process_record(self, data, partition_key, sequence_number, sub_sequence_number):
        super().process_record(data, partition_key, sequence_number, sub_sequence_number)
        self._write(event="record", data=base64.b64encode(data).decode(), pk=partition_key,
                    seq=str(sequence_number), sub=sub_sequence_number)

    def lease_lost(self, lease_lost_input):
        self._write(event="leaseLost")
        super().lease_lost(lease_lost_input)

    def shard_ended(self, shard_ended_input):
        self._write(event="shardEnded")
        super().shard_ended(shard_ended_input)

    def shutdown_requested(self, shutdown_requested_input):
        self._write(event="shutdownRequested")
        super().shutdown_requested(shutdown_requested_input)


if __name__ == "__main__":
    kcl.KCLProcess(RecordedSample()).run()
