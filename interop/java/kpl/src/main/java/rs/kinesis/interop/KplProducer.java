package rs.kinesis.interop;

import com.google.common.util.concurrent.FutureCallback;
import com.google.common.util.concurrent.Futures;
import com.google.common.util.concurrent.MoreExecutors;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Properties;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.kinesis.producer.Attempt;
import software.amazon.kinesis.producer.KinesisProducer;
import software.amazon.kinesis.producer.KinesisProducerConfiguration;
import software.amazon.kinesis.producer.UserRecordFailedException;
import software.amazon.kinesis.producer.UserRecordResult;

/**
 * Produces records with the AWS KPL, read from stdin, and reports each result on stdout.
 *
 * <p>Input: one record per line, {@code <base64 partition key> <explicit hash key or -> <base64 data>}.
 * Output: one JSON line per record, in completion order:
 * {@code {"event":"result","i":N,"ok":true,"seq":"…","shard":"…","attempts":K}} or
 * {@code {"event":"result","i":N,"ok":false,"error":"…"}}, then {@code {"event":"done",…}}
 * once stdin is closed and every record is answered.
 *
 * <p>Options: {@code --stream NAME}; {@code --warmup true} first puts one record (partition key and
 * data {@code warmup}) and waits for it, so that the stream's shard map is loaded before the
 * input is read (the KPL sends records unaggregated while it has no shard map); and any KPL setting as {@code --kpl.Name value}
 * (e.g. {@code --kpl.KinesisEndpoint 127.0.0.1 --kpl.KinesisPort 4443 --kpl.VerifyCertificate false}).
 * {@code --quiet true} writes no result line per record, only the counts in {@code done}
 * ({@code "ok":N,"failed":M}): for the benchmark against our producer, where a million JSON
 * lines would measure the harness. Credentials are test/test.
 */
public final class KplProducer {
    private KplProducer() {}

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String stream = args.get("stream");
        Properties props = new Properties();
        props.put("Region", "us-east-1");
        props.put("MetricsLevel", "none");
        props.put("LogLevel", "warning");
        props.putAll(args.withPrefix("kpl."));
        KinesisProducerConfiguration config = KinesisProducerConfiguration.fromProperties(props);
        config.setCredentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test")));
        KinesisProducer producer = new KinesisProducer(config);
        Json.event("started").emitNow();
        if (Boolean.parseBoolean(args.get("warmup", "false"))) {
            UserRecordResult warm = producer.addUserRecord(
                            stream, "warmup", null, ByteBuffer.wrap("warmup".getBytes(StandardCharsets.UTF_8)))
                    .get();
            Json.event("warmup")
                    .bool("ok", warm.isSuccessful())
                    .str("seq", warm.getSequenceNumber())
                    .str("shard", warm.getShardId())
                    .emitNow();
        }

        boolean quiet = Boolean.parseBoolean(args.get("quiet", "false"));
        java.util.concurrent.atomic.AtomicLong succeeded = new java.util.concurrent.atomic.AtomicLong();
        java.util.concurrent.atomic.AtomicLong failed = new java.util.concurrent.atomic.AtomicLong();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        Base64.Decoder b64 = Base64.getDecoder();
        long index = 0;
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] parts = line.split(" ", -1);
            String partitionKey = new String(b64.decode(parts[0]), StandardCharsets.UTF_8);
            String explicitHashKey = parts[1].equals("-") ? null : parts[1];
            ByteBuffer data = ByteBuffer.wrap(b64.decode(parts[2]));
            long i = index++;
            Futures.addCallback(
                    producer.addUserRecord(stream, partitionKey, explicitHashKey, data),
                    new FutureCallback<UserRecordResult>() {
                        @Override
                        public void onSuccess(UserRecordResult result) {
                            if (quiet) {
                                (result.isSuccessful() ? succeeded : failed).incrementAndGet();
                                return;
                            }
                            Json.event("result")
                                    .num("i", i)
                                    .bool("ok", result.isSuccessful())
                                    .str("seq", result.getSequenceNumber())
                                    .str("shard", result.getShardId())
                                    .num("attempts", result.getAttempts().size())
                                    .emit();
                        }

                        @Override
                        public void onFailure(Throwable error) {
                            if (quiet) {
                                failed.incrementAndGet();
                                return;
                            }
                            String detail = error.toString();
                            if (error instanceof UserRecordFailedException f) {
                                StringBuilder sb = new StringBuilder();
                                for (Attempt a : f.getResult().getAttempts()) {
                                    sb.append(a.getErrorCode()).append(": ").append(a.getErrorMessage()).append("; ");
                                }
                                detail = sb.toString();
                            }
                            Json.event("result").num("i", i).bool("ok", false).str("error", detail).emit();
                        }
                    },
                    MoreExecutors.directExecutor());
        }
        producer.flushSync();
        Json.flush();
        producer.destroy();
        Json.event("done")
                .num("records", index)
                .num("ok", succeeded.get())
                .num("failed", failed.get())
                .emitNow();
        System.exit(0);
    }
}
