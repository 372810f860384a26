package software.amazon.kinesis.coordinator;

import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.leases.exceptions.DependencyException;
import software.amazon.kinesis.leases.exceptions.InvalidStateException;
import software.amazon.kinesis.leases.exceptions.ProvisionedThroughputException;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.retrieval.RetrievalConfig;

/**
 * The Java KCL's {@link Scheduler} without its start-up wait on an empty lease table. One source
 * (interop/java/kcl-shared), compiled against the KCL 2.x (kcl module) and 3.x (kcl3, kcl31).
 *
 * <p>A KCL worker (2.x and 3.x alike) that finds the lease table empty waits a random 1 to 30 s
 * (checking every 3 s) before it syncs shards, so that a fleet starting together does not sync
 * all at once. The interop tests start one Java worker at a time and cannot afford 15 s per start
 * on average: this subclass (in the Scheduler's package, to override the package-private hook)
 * syncs at once when the table is empty, which is what the wait ends in when no other worker
 * fills the table. In 3.x the sync is still done only by the leader (lock holder). Nothing else
 * of the Scheduler changes.
 */
public class FastStartScheduler extends Scheduler {
    public FastStartScheduler(
            CheckpointConfig checkpointConfig,
            CoordinatorConfig coordinatorConfig,
            LeaseManagementConfig leaseManagementConfig,
            LifecycleConfig lifecycleConfig,
            MetricsConfig metricsConfig,
            ProcessorConfig processorConfig,
            RetrievalConfig retrievalConfig) {
        super(
                checkpointConfig,
                coordinatorConfig,
                leaseManagementConfig,
                lifecycleConfig,
                metricsConfig,
                processorConfig,
                retrievalConfig);
    }

    @Override
    boolean shouldInitiateLeaseSync()
            throws InterruptedException, DependencyException, ProvisionedThroughputException, InvalidStateException {
        return leaseRefresher().isLeaseTableEmpty();
    }
}
