// A record processor on the npm package aws-kcl (installed by
// scripts/peers), in the shape of the package repository's
// basic sample consumer (not shipped in the npm package): each record is
// written to a file, and each batch is checkpointed at its last record's
// sequence number (the package's checkpoint sends no sub-sequence number).
// Its file: $MULTILANG_RECORD_DIR/node-<pid>.jsonl, one JSON line per event.
'use strict';

const fs = require('fs');
const path = require('path');
const kcl = require('aws-kcl');

const out = path.join(process.env.MULTILANG_RECORD_DIR, `node-${process.pid}.jsonl`);

function write(event) {
  event.pid = process.pid;
  fs.appendFileSync(out, JSON.stringify(event) + '\n');
}

function recordProcessor() {
  let shardId;
  return {
    initialize(input, completeCallback) {
      shardId = input.shardId;
      write({ event: 'initialize', shard: shardId, seq: input.sequenceNumber, sub: input.subSequenceNumber });
      completeCallback();
    },

    processRecords(input, completeCallback) {
      if (!input || !input.records) {
        completeCallback();
        return;
      }
      let sequenceNumber;
      for (const record of input.records) {
        sequenceNumber = record.sequenceNumber;
        write({
          event: 'record', shard: shardId, data: record.data, pk: record.partitionKey,
          seq: record.sequenceNumber, sub: record.subSequenceNumber,
        });
      }
      if (!sequenceNumber) {
        completeCallback();
        return;
      }
      input.checkpointer.checkpoint(sequenceNumber, (err) => {
        write({ event: 'checkpoint', shard: shardId, seq: sequenceNumber, error: err || null });
        completeCallback();
      });
    },

    leaseLost(input, completeCallback) {
      write({ event: 'leaseLost', shard: shardId });
      completeCallback();
    },

    shardEnded(input, completeCallback) {
      write({ event: 'shardEnded', shard: shardId });
      input.checkpointer.checkpoint((err) => completeCallback());
    },

    shutdownRequested(input, completeCallback) {
      write({ event: 'shutdownRequested', shard: shardId });
      input.checkpointer.checkpoint((err) => completeCallback());
    },
  };
}

kcl(recordProcessor()).run();
