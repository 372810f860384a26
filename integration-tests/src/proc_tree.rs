//! CPU time and memory of a process and its descendants, from Linux's
//! /proc: what the benchmarks against the Java originals report per process
//! tree (the AWS KPL is a JVM plus its native daemon).
//!
//! A [`TreeSampler`] polls the tree every few milliseconds: each process's
//! CPU time (user + system, `/proc/<pid>/stat`) as last seen, and the peak
//! of the tree's summed resident sets (`VmRSS`). CPU used in the last poll
//! interval before a process exits is missed (at most the interval).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The kernel's clock ticks per second for /proc CPU times (`USER_HZ`,
/// 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// What a sampled tree used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TreeUsage {
    /// CPU time of every process of the tree, user + system.
    pub cpu: Duration,
    /// The largest sum of the tree's resident sets seen, in bytes.
    pub peak_rss: u64,
    /// How many processes the tree had in all.
    pub processes: usize,
}

/// Samples a process tree until stopped.
#[derive(Debug)]
pub struct TreeSampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<TreeUsage>,
}

impl TreeSampler {
    /// Starts sampling the tree rooted at `pid` every `every`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut cpu_ticks: HashMap<u32, u64> = HashMap::new();
            let mut peak_rss = 0;
            let mut tick = tokio::time::interval(every);
            loop {
                let mut rss = 0;
                for process in tree(pid) {
                    if let Some((ticks, resident)) = usage(process) {
                        cpu_ticks.insert(process, ticks);
                        rss += resident;
                    }
                }
                peak_rss = peak_rss.max(rss);
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
            }
            let ticks: u64 = cpu_ticks.values().sum();
            TreeUsage {
                cpu: Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND),
                peak_rss,
                processes: cpu_ticks.len(),
            }
        });
        Self { stop, task }
    }

    /// Stops sampling (call it when the root process has exited) and
    /// returns what the tree used.
    pub async fn finish(self) -> TreeUsage {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// `pid` and its descendants, as /proc lists them now.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut next = 0;
    while next < all.len() {
        let parent = all[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    all
}

/// A process's CPU ticks (user + system) and resident set in bytes.
pub fn usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold anything: utime and stime are the 14th and 15th fields.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some((ticks, rss_kib * 1024))
}
