package rs.kinesis.interop;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
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
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.FastStartScheduler;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
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
 * A Java KCL 3.x application (polling retrieval, CloudWatch metrics off) whose processor writes
 * every record it sees, and every lifecycle call, as JSON lines on stdout, and checkpoints as
 * told. The 3.x counterpart of {@code KclConsumer} (same options and lines), with the 3.x
 * timings shortened so that a fleet test (leader lock, lease assignment, worker metrics,
 * graceful handoff) runs in a minute or two.
 *
 * <p>Options: {@code --stream --app --worker --kinesis URL --dynamodb URL} (endpoint overrides),
 * {@code --position TRIM_HORIZON|LATEST}, {@code --failover-ms} (3000), {@code --idle-ms} (200),
 * {@code --checkpoint batch|none} (batch: after each processRecords call, at its last record),
 * {@code --limit N}: per shard, process only the first N records the processor sees, checkpoint
 * at the N-th (with its sub-sequence number) and ignore the rest.
 *
 * <p>3.x options: {@code --assign-ms} lease assignment (LAM) interval (default: failover-ms),
 * {@code --leader-lease-ms} / {@code --leader-heartbeat-ms} leader lock lease duration and
 * heartbeat (6000 / 2000), {@code --metrics-ms} WorkerMetricStats reporter period (5000),
 * {@code --handoff-ms} graceful lease handoff timeout (10000), {@code --handoff true|false},
 * {@code --client-version 3X|COMPATIBLE_WITH_2X|COMPATIBLE_WITH_2X_PHASE1} (3X),
 * {@code --migrate-all-entities true|false} (false; 3.5 table migration phase 2),
 * {@code --shard-sync-ms} (1000) and {@code --audit-ms} (5000: leader's periodic shard sync /
 * leases recovery auditor). With {@code --failover-ms 10000 --assign-ms 20000 --leader-lease-ms
 * 120000 --leader-heartbeat-ms 30000 --metrics-ms 30000 --handoff-ms 30000 --shard-sync-ms 60000
 * --audit-ms 120000} every timing is the KCL default.
 *
 * <p>Lines: {@code started}, {@code initialize} (shard, seq, subseq of the lease's checkpoint),
 * {@code record} (shard, seq, subseq, pk, ehk, data base64), {@code checkpoint} (shard, seq,
 * subseq, or error), {@code limit} (shard), {@code leaseLost}, {@code shardEnded},
 * {@code shutdownRequested}, {@code stopped}. Every line has {@code worker} and {@code t} (epoch
 * ms).
 *
 * <p>stdin: {@code shutdown} starts a graceful shutdown (processors get shutdownRequested and
 * checkpoint as told, then the JVM exits); end of input does the same.
 */
public final class Kcl3Consumer {
    private Kcl3Consumer() {}

    static String worker;
    static String checkpointMode;
    static long limit;

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String stream = args.get("stream");
        String app = args.get("app");
        worker = args.get("worker");
        checkpointMode = args.get("checkpoint", "batch");
        limit = args.getLong("limit", Long.MAX_VALUE);
        long failover = args.getLong("failover-ms", 3000);
        long idle = args.getLong("idle-ms", 200);
        long assign = args.getLong("assign-ms", failover);
        long leaderLease = args.getLong("leader-lease-ms", 6000);
        long leaderHeartbeat = args.getLong("leader-heartbeat-ms", 2000);
        long metricsPeriod = args.getLong("metrics-ms", 5000);
        long handoffTimeout = args.getLong("handoff-ms", 10000);
        boolean handoff = Boolean.parseBoolean(args.get("handoff", "true"));
        CoordinatorConfig.ClientVersionConfig clientVersion =
                CoordinatorConfig.ClientVersionConfig.valueOf("CLIENT_VERSION_CONFIG_" + args.get("client-version", "3X"));
        boolean migrateAll = Boolean.parseBoolean(args.get("migrate-all-entities", "false"));
        long shardSync = args.getLong("shard-sync-ms", 1000);
        long audit = args.getLong("audit-ms", 5000);

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

        LeaseManagementConfig leases = configs.leaseManagementConfig()
                .failoverTimeMillis(failover)
                .leaseAssignmentIntervalMillis(assign)
                .shardSyncIntervalMillis(shardSync)
                .listShardsBackoffTimeInMillis(200)
                // See KclConsumer: the shard list cache is short, as the other timings.
                .listShardsCacheAllowedAgeInSeconds(1)
                .leasesRecoveryAuditorExecutionFrequencyMillis(audit)
                .gracefulLeaseHandoffConfig(LeaseManagementConfig.GracefulLeaseHandoffConfig.builder()
                        .gracefulLeaseHandoffTimeoutMillis(handoffTimeout)
                        .isGracefulLeaseHandoffEnabled(handoff)
                        .build());
        // Configurable since KCL 3.2.0 (by reflection, so that this source also
        // builds against 3.1.x: the kcl31 module).
        setIfPresent(leases, "dynamoDbLockBasedLeaderLeaseDurationInMillis", long.class, leaderLease);
        setIfPresent(leases, "dynamoDbLockBasedLeaderHeartbeatPeriodInMillis", long.class, leaderHeartbeat);
        leases.workerUtilizationAwareAssignmentConfig().workerMetricsReporterFreqInMillis(metricsPeriod);

        CoordinatorConfig coordinator = configs.coordinatorConfig()
                .clientVersionConfig(clientVersion)
                .parentShardPollIntervalMillis(500)
                .shardConsumerDispatchPollIntervalMillis(100)
                .schedulerInitializationBackoffTimeMillis(500);
        // KCL 3.5+.
        setIfPresent(coordinator, "migrateAllEntitiesToLeaseTable", boolean.class, migrateAll);

        Scheduler scheduler = new FastStartScheduler(
                configs.checkpointConfig(),
                coordinator,
                leases,
                configs.lifecycleConfig(),
                configs.metricsConfig().metricsLevel(MetricsLevel.NONE).metricsFactory(new NullMetricsFactory()),
                configs.processorConfig(),
                configs.retrievalConfig()
                        .initialPositionInStreamExtended(position)
                        .retrievalSpecificConfig(new PollingConfig(stream, kinesis).idleTimeBetweenReadsInMillis(idle)));
        Thread runner = new Thread(scheduler, "scheduler");
        runner.start();
        Json.event("started").str("worker", worker).emitNow();

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.trim().equals("shutdown")) {
                break;
            }
        }
        Future<Boolean> done = scheduler.startGracefulShutdown();
        boolean clean = false;
        try {
            clean = done.get(60, TimeUnit.SECONDS);
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

        /** Graceful shutdown of this worker, and in 3.x also a graceful handoff of this lease. */
        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            Json.event("shutdownRequested").str("worker", worker).str("shard", shard).emitNow();
            if (checkpointMode.equals("batch") && seen < limit && lastSeq != null) {
                checkpoint(input.checkpointer(), lastSeq, lastSubseq);
            }
        }
    }

    /** Calls a fluent setter the KCL version on the classpath may lack; says so when it does. */
    static void setIfPresent(Object target, String name, Class<?> type, Object value) {
        try {
            target.getClass().getMethod(name, type).invoke(target, value);
        } catch (NoSuchMethodException e) {
            Json.event("unsupported").str("setting", name).emitNow();
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(name, e);
        }
    }

}
