package rs.kinesis.interop;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.FastStartScheduler;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.processor.RecordProcessorCheckpointer;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * A Java KCL 2.x application (polling retrieval) whose processor writes every record it sees,
 * and every lifecycle call, as JSON lines on stdout, and checkpoints as told.
 *
 * <p>Options: {@code --stream --app --worker --kinesis URL --dynamodb URL} (endpoint overrides),
 * {@code --position TRIM_HORIZON|LATEST}, {@code --failover-ms}, {@code --idle-ms},
 * {@code --checkpoint batch|none} (batch: after each processRecords call, at its last record),
 * {@code --limit N}: per shard, process only the first N records the processor sees, checkpoint
 * at the N-th (with its sub-sequence number: inside an aggregate when it falls there) and ignore
 * the rest.
 *
 * <p>Lines: {@code initialize} (shard, seq, subseq of the lease's checkpoint), {@code record}
 * (shard, seq, subseq, pk, ehk, data base64), {@code checkpoint} (shard, seq, subseq, or error),
 * {@code limit} (shard), {@code leaseLost}, {@code shardEnded}, {@code shutdownRequested},
 * {@code stopped}. Every line has {@code worker} and {@code t} (epoch ms).
 *
 * <p>stdin: {@code shutdown} starts a graceful shutdown (processors checkpoint as told, then the
 * JVM exits); end of input does the same.
 *
 * <p>{@code --count N} (for the consumer benchmark): no line per record or checkpoint; the
 * processor only counts and checkpoints each batch; once N records were delivered, one line
 * {@code {"event":"drained","records":N,"seconds_to_first":..,"seconds_to_all":..}} (seconds
 * since the JVM started), then a graceful shutdown without waiting for stdin.
 */
public final class KclConsumer {
    private KclConsumer() {}

    static String worker;
    static String checkpointMode;
    static long limit;
    static long countTarget;
    static final java.util.concurrent.atomic.AtomicLong counted = new java.util.concurrent.atomic.AtomicLong();
    static volatile long firstAtMillis;
    static final java.util.concurrent.CountDownLatch drained = new java.util.concurrent.CountDownLatch(1);

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String stream = args.get("stream");
        String app = args.get("app");
        worker = args.get("worker");
        checkpointMode = args.get("checkpoint", "batch");
        limit = args.getLong("limit", Long.MAX_VALUE);
        countTarget = args.getLong("count", 0);
        long failover = args.getLong("failover-ms", 3000);
        long idle = args.getLong("idle-ms", 200);

        StaticCredentialsProvider credentials =
                StaticCredentialsProvider.create(AwsBasicCredentials.create("test", "test"));
        Region region = Region.US_EAST_1;
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .endpointOverride(URI.create(args.get("kinesis")))
                .region(region)
                .credentialsProvider(credentials)
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP1_1))
                .build();
        DynamoDbAsyncClient dynamo = DynamoDbAsyncClient.builder()
                .endpointOverride(URI.create(args.get("dynamodb")))
                .region(region)
                .credentialsProvider(credentials)
                .build();
        // Never called: metrics are off.
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .endpointOverride(URI.create("http://127.0.0.1:9"))
                .region(region)
                .credentialsProvider(credentials)
                .build();

        ShardRecordProcessorFactory factory = Processor::new;
        ConfigsBuilder configs = new ConfigsBuilder(stream, app, kinesis, dynamo, cloudWatch, worker, factory);
        InitialPositionInStreamExtended position = InitialPositionInStreamExtended.newInitialPosition(
                InitialPositionInStream.valueOf(args.get("position", "TRIM_HORIZON")));
        Scheduler scheduler = new FastStartScheduler(
                configs.checkpointConfig(),
                configs.coordinatorConfig()
                        .parentShardPollIntervalMillis(500)
                        .shardConsumerDispatchPollIntervalMillis(100)
                        .schedulerInitializationBackoffTimeMillis(500),
                configs.leaseManagementConfig()
                        .failoverTimeMillis(failover)
                        .shardSyncIntervalMillis(1000)
                        .listShardsBackoffTimeInMillis(200)
                        // The shard list a ProcessTask takes each shard's hash key range
                        // from is cached (30 s by default): a child shard younger than the
                        // cache is deaggregated without the range check. Short, as the
                        // other timings.
                        .listShardsCacheAllowedAgeInSeconds(1)
                        .leasesRecoveryAuditorExecutionFrequencyMillis(5000),
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsLevel(MetricsLevel.NONE).metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .initialPositionInStreamExtended(position)
                        .retrievalSpecificConfig(new PollingConfig(stream, kinesis).idleTimeBetweenReadsInMillis(idle)));
        Thread runner = new Thread(scheduler, "scheduler");
        runner.start();
        Json.event("started").str("worker", worker).emitNow();

        if (countTarget > 0) {
            drained.await();
        } else {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            String line;
            while ((line = in.readLine()) != null) {
                if (line.trim().equals("shutdown")) {
                    break;
                }
            }
        }
        Future<Boolean> done = scheduler.startGracefulShutdown();
        boolean clean = false;
        try {
            clean = done.get(30, TimeUnit.SECONDS);
        } catch (Exception e) {
            Json.event("error").str("worker", worker).str("error", e.toString()).emitNow();
        }
        Json.event("stopped").str("worker", worker).bool("clean", clean).emitNow();
        System.exit(0);
    }

    /** One shard's processor. */
    static final class Processor implements ShardRecordProcessor {
        private String shard;
        private long seen;
        private String lastSeq;
        private long lastSubseq;

        @Override
        public void initialize(InitializationInput input) {
            shard = input.shardId();
            Json.event("initialize")
                    .str("worker", worker)
                    .str("shard", shard)
                    .str("seq", input.extendedSequenceNumber().sequenceNumber())
                    .num("subseq", input.extendedSequenceNumber().subSequenceNumber())
                    .emitNow();
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            List<KinesisClientRecord> records = input.records();
            if (countTarget > 0) {
                count(input, records);
                return;
            }
            boolean reachedLimit = false;
            for (KinesisClientRecord r : records) {
                if (seen >= limit) {
                    break;
                }
                seen++;
                byte[] data = new byte[r.data().remaining()];
                r.data().get(data);
                Json.event("record")
                        .str("worker", worker)
                        .str("shard", shard)
                        .str("seq", r.sequenceNumber())
                        .num("subseq", r.subSequenceNumber())
                        .str("pk", r.partitionKey())
                        .str("ehk", r.explicitHashKey())
                        .bytes("data", data)
                        .emit();
                lastSeq = r.sequenceNumber();
                lastSubseq = r.subSequenceNumber();
                if (seen == limit) {
                    reachedLimit = true;
                }
            }
            Json.flush();
            if (reachedLimit) {
                checkpoint(input.checkpointer(), lastSeq, lastSubseq);
                Json.event("limit").str("worker", worker).str("shard", shard).emitNow();
            } else if (seen < limit && checkpointMode.equals("batch") && lastSeq != null) {
                checkpoint(input.checkpointer(), lastSeq, lastSubseq);
            }
        }

        /** {@code --count}: count, checkpoint the batch, report once the target is reached. */
        private void count(ProcessRecordsInput input, List<KinesisClientRecord> records) {
            if (records.isEmpty()) {
                return;
            }
            long now = System.currentTimeMillis();
            if (firstAtMillis == 0) {
                firstAtMillis = now;
            }
            long total = counted.addAndGet(records.size());
            try {
                input.checkpointer().checkpoint();
            } catch (Exception e) {
                Json.event("checkpoint").str("shard", shard).str("error", e.toString()).emitNow();
            }
            if (total >= countTarget && drained.getCount() > 0) {
                long start = java.lang.management.ManagementFactory.getRuntimeMXBean().getStartTime();
                Json.event("drained")
                        .num("records", total)
                        .str("seconds_to_first", String.valueOf((firstAtMillis - start) / 1000.0))
                        .str("seconds_to_all", String.valueOf((now - start) / 1000.0))
                        .emitNow();
                drained.countDown();
            }
        }

        private void checkpoint(RecordProcessorCheckpointer checkpointer, String seq, long subseq) {
            try {
                checkpointer.checkpoint(seq, subseq);
                Json.event("checkpoint")
                        .str("worker", worker)
                        .str("shard", shard)
                        .str("seq", seq)
                        .num("subseq", subseq)
                        .emitNow();
            } catch (Exception e) {
                Json.event("checkpoint")
                        .str("worker", worker)
                        .str("shard", shard)
                        .str("seq", seq)
                        .num("subseq", subseq)
                        .str("error", e.toString())
                        .emitNow();
            }
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
            Json.event("leaseLost").str("worker", worker).str("shard", shard).emitNow();
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            try {
                input.checkpointer().checkpoint();
                Json.event("shardEnded").str("worker", worker).str("shard", shard).emitNow();
            } catch (Exception e) {
                Json.event("shardEnded")
                        .str("worker", worker)
                        .str("shard", shard)
                        .str("error", e.toString())
                        .emitNow();
            }
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            Json.event("shutdownRequested").str("worker", worker).str("shard", shard).emitNow();
            if (checkpointMode.equals("batch") && seen < limit && lastSeq != null) {
                checkpoint(input.checkpointer(), lastSeq, lastSubseq);
            }
        }
    }
}
