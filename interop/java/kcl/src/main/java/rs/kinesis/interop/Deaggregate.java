package rs.kinesis.interop;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import software.amazon.kinesis.retrieval.AggregatorUtil;
import software.amazon.kinesis.retrieval.KinesisClientRecord;

/**
 * Deaggregates Kinesis records with the Java KCL's {@link AggregatorUtil}.
 *
 * <p>Input: one Kinesis record per line, {@code <sequence number> <base64 partition key>
 * <explicit hash key or -> <base64 data>}; {@code --start}/{@code --end} give the shard's hash key
 * range (default: all). Output: one JSON line per user record, in order:
 * {@code {"event":"record","seq":…,"subseq":…,"pk":…,"ehk":…,"data":…,"aggregated":…}}.
 */
public final class Deaggregate {
    private Deaggregate() {}

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String start = args.get("start", "0");
        String end = args.get("end", "340282366920938463463374607431768211455");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        Base64.Decoder b64 = Base64.getDecoder();
        List<KinesisClientRecord> records = new ArrayList<>();
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] parts = line.split(" ", -1);
            records.add(KinesisClientRecord.builder()
                    .sequenceNumber(parts[0])
                    .partitionKey(new String(b64.decode(parts[1]), StandardCharsets.UTF_8))
                    .explicitHashKey(parts[2].equals("-") ? null : parts[2])
                    .data(ByteBuffer.wrap(b64.decode(parts[3])))
                    .build());
        }
        for (KinesisClientRecord r : new AggregatorUtil().deaggregate(records, start, end)) {
            byte[] data = new byte[r.data().remaining()];
            r.data().get(data);
            Json.event("record")
                    .str("seq", r.sequenceNumber())
                    .num("subseq", r.subSequenceNumber())
                    .str("pk", r.partitionKey())
                    .str("ehk", r.explicitHashKey())
                    .bytes("data", data)
                    .bool("aggregated", r.aggregated())
                    .emit();
        }
        Json.flush();
    }
}
