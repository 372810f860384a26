//! Set-up shared by the daemon tests: the embedded back ends, a stream
//! filled by `kpl`, properties files, daemon processes, and reading what
//! the record processors wrote.
#![allow(dead_code)] // each test file uses a part of it

use super::*;

/// Where the packages of `scripts/peers` are.
pub struct Peers {
    root: PathBuf,
}

pub fn peers() -> Peers {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = std::env::var_os("LOCAL_AWS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join(".local-aws"))
        .join("multilang");
    Peers { root }
}

fn tool_on_path(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Peers {
    /// Whether python3 runs (skips the test with a message otherwise).
    pub fn python(&self) -> bool {
        let found = tool_on_path("python3");
        if !found {
            eprintln!("SKIPPED: python3 is not on the PATH");
        }
        found
    }

    /// The unpacked amazon-kclpy sdist (for PYTHONPATH), or `None` (skip)
    /// without python3. Panics when python3 is there but the package is
    /// not installed.
    pub fn kclpy(&self) -> Option<PathBuf> {
        if !self.python() {
            return None;
        }
        let dir = self.root.join("kclpy");
        assert!(
            dir.join("samples/sample_kclpy_app.py").is_file(),
            "{} is missing: run scripts/peers (scripts/test does)",
            dir.display()
        );
        Some(dir)
    }

    /// The node_modules holding aws-kcl (for NODE_PATH), or `None` (skip)
    /// without node.
    pub fn node_modules(&self) -> Option<PathBuf> {
        if !tool_on_path("node") {
            eprintln!("SKIPPED: node is not on the PATH");
            return None;
        }
        let dir = self.root.join("node/node_modules");
        assert!(
            dir.join("aws-kcl/index.js").is_file(),
            "{} is missing: run scripts/peers (scripts/test does)",
            dir.display()
        );
        Some(dir)
    }
}

/// A record processor of `tests/processors/`.
pub fn processor(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/processors")
        .join(name)
}

pub struct Setup {
    pub aws: LocalAws,
    pub stream: String,
    pub app: String,
    pub dir: tempfile::TempDir,
    pub record_dir: PathBuf,
}

impl Setup {
    /// The embedded back ends and a new stream of `shards` shards.
    pub async fn new(shards: i32) -> Self {
        let aws = LocalAws::start().await.expect("local AWS");
        let stream = unique_name("multilang");
        resources::create_stream(&aws.kinesis_client(), &stream, shards)
            .await
            .expect("stream");
        let dir = tempfile::tempdir().expect("tempdir");
        let record_dir = dir.path().join("records");
        std::fs::create_dir_all(&record_dir).expect("record dir");
        Self {
            aws,
            app: unique_name("multilang-app"),
            stream,
            dir,
            record_dir,
        }
    }

    fn producer(&self) -> Producer {
        Producer::builder()
            .sdk_config(self.aws.sdk_config())
            .streams([self.stream.clone()])
            .build()
            .expect("producer")
    }

    /// Puts records `record-<i>` (keys `key-<i % 97>`, KPL-aggregated) and
    /// returns their payloads.
    pub async fn produce(&self, range: std::ops::Range<usize>) -> BTreeSet<String> {
        let producer = self.producer();
        let sent = put(&producer, &self.stream, range).await;
        producer.shutdown().await.expect("producer shutdown");
        sent
    }

    /// Puts the records of `range` spread over `over`, in the background.
    pub fn produce_in_background(
        &self,
        range: std::ops::Range<usize>,
        over: Duration,
    ) -> tokio::task::JoinHandle<BTreeSet<String>> {
        let producer = self.producer();
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let steps = 20;
            let step = range.len().div_ceil(steps);
            let mut sent = BTreeSet::new();
            let mut start = range.start;
            while start < range.end {
                let end = (start + step).min(range.end);
                sent.extend(put(&producer, &stream, start..end).await);
                start = end;
                tokio::time::sleep(over / steps as u32).await;
            }
            producer.shutdown().await.expect("producer shutdown");
            sent
        })
    }

    /// A properties file for `executable` with the test's timings, plus
    /// `extra` keys.
    pub fn properties(&self, executable: &str, extra: &[(&str, &str)]) -> PathBuf {
        self.properties_for(&self.app, executable, extra)
    }

    /// The same for application `app`.
    pub fn properties_for(&self, app: &str, executable: &str, extra: &[(&str, &str)]) -> PathBuf {
        let endpoints = self.aws.endpoints();
        let mut text = format!(
            "executableName = {executable}\n\
             streamName = {}\n\
             applicationName = {}\n\
             initialPositionInStream = TRIM_HORIZON\n\
             regionName = us-east-1\n\
             kinesisEndpoint = {}\n\
             dynamoDBEndpoint = {}\n\
             AwsCredentialsProvider = DefaultCredentialsProvider\n\
             retrievalMode = POLLING\n\
             metricsLevel = NONE\n\
             failoverTimeMillis = 3000\n\
             shardSyncIntervalMillis = 1000\n\
             idleTimeBetweenReadsInMillis = 100\n\
             shutdownGraceMillis = 20000\n",
            self.stream, app, endpoints.kinesis, endpoints.dynamodb
        );
        for (key, value) in extra {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let path = self.dir.path().join(format!("{app}.properties"));
        std::fs::write(&path, text).expect("properties file");
        path
    }

    /// Starts `kcl-multilang -p properties` with `env` added; its stderr
    /// goes to a log file.
    pub fn daemon(&self, properties: &Path, env: &[(&str, String)]) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", unique_name("run")));
        let file = std::fs::File::create(&log).expect("daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kcl-multilang"));
        command
            .arg("-p")
            .arg(properties)
            .env("MULTILANG_RECORD_DIR", &self.record_dir)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info,aws=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        Daemon {
            child: command.spawn().expect("start kcl-multilang"),
            log,
        }
    }

    /// Waits (up to 90 s) until the events of the files `<prefix>*.jsonl`
    /// satisfy `done`; returns whether they did.
    pub async fn wait_for_events(
        &self,
        prefix: &str,
        done: impl Fn(&[Value]) -> bool,
        daemon: &mut Daemon,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if done(&self.events(prefix)) {
                return true;
            }
            daemon.assert_running();
            assert!(
                Instant::now() < deadline,
                "timed out; daemon log:\n{}",
                daemon.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every event of the files `<prefix>*.jsonl` (file by file).
    pub fn events(&self, prefix: &str) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.record_dir)
            .expect("record dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".jsonl"))
            })
            .collect();
        files.sort();
        files.iter().flat_map(|p| read_lines(p)).collect()
    }

    /// The recorder's files: (shard, pid) → the lines it received.
    pub fn recorder_files(&self) -> BTreeMap<(String, u32), Vec<Value>> {
        recorder_files_in(&self.record_dir)
    }

    /// Waits until `count` recorder files exist.
    pub async fn wait_for_files(&self, count: usize, timeout: Duration, daemon: &mut Daemon) {
        let deadline = Instant::now() + timeout;
        while self.recorder_files().len() < count {
            daemon.assert_running();
            assert!(
                Instant::now() < deadline,
                "children missing:\n{}",
                daemon.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stream's shard ids.
    pub async fn shards(&self) -> Vec<String> {
        self.aws
            .kinesis_client()
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .expect("ListShards")
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect()
    }

    /// The lease table's checkpoints, by shard.
    pub async fn checkpoints(&self) -> HashMap<String, ExtendedSequenceNumber> {
        LeaseTable::new(self.aws.dynamodb_client(), &self.app)
            .list_leases()
            .await
            .expect("leases")
            .into_iter()
            .map(|lease| (lease.shard().to_owned(), lease.checkpoint))
            .collect()
    }

    /// The lease table's owners.
    pub async fn owners(&self) -> Vec<Option<String>> {
        LeaseTable::new(self.aws.dynamodb_client(), &self.app)
            .list_leases()
            .await
            .expect("leases")
            .into_iter()
            .map(|lease| lease.lease_owner)
            .collect()
    }

    pub async fn finish(self) {
        resources::delete_stream(&self.aws.kinesis_client(), &self.stream)
            .await
            .ok();
        self.aws.shutdown().await;
    }
}

/// The recorder's files in `dir`: (shard, pid) → the lines it received.
pub fn recorder_files_in(dir: &Path) -> BTreeMap<(String, u32), Vec<Value>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("record dir").flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".jsonl") else {
            continue;
        };
        let Some((shard, pid)) = stem.rsplit_once('.') else {
            continue;
        };
        let Ok(pid) = pid.parse() else { continue };
        files.insert((shard.to_owned(), pid), read_lines(&path));
    }
    files
}

async fn put(producer: &Producer, stream: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    let mut pending = Vec::with_capacity(range.len());
    let mut sent = BTreeSet::new();
    for i in range {
        let data = format!("record-{i:06}");
        let record = UserRecord::new(stream, format!("key-{}", i % 97), data.clone().into_bytes());
        pending.push(producer.add_user_record(record).await.expect("accepted"));
        sent.insert(data);
    }
    for result in pending {
        result.await.expect("stored");
    }
    sent
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// A daemon process, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Panics (with its log) if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("kcl-multilang exited ({status}):\n{}", self.log_tail(60));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then waits (up to 60 s) for a successful exit.
    pub async fn stop(&mut self) {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("kcl-multilang stops within 60 s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "exit {status}:\n{}", self.log_tail(60));
    }
}

pub fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "SIGKILL {pid}");
}

/// Payload → how many times a processor's `record` events saw it.
pub fn records_of(events: &[Value]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for event in events.iter().filter(|e| e["event"] == "record") {
        let data = B64
            .decode(event["data"].as_str().unwrap_or_default())
            .expect("base64");
        *seen
            .entry(String::from_utf8_lossy(&data).into_owned())
            .or_default() += 1;
    }
    seen
}

/// The last record position of each shard in `record` events.
pub fn last_positions(events: &[Value]) -> BTreeMap<String, ExtendedSequenceNumber> {
    let mut last: BTreeMap<String, ExtendedSequenceNumber> = BTreeMap::new();
    for event in events.iter().filter(|e| e["event"] == "record") {
        let shard = event["shard"].as_str().unwrap_or_default().to_owned();
        let at = ExtendedSequenceNumber::new(
            event["seq"].as_str().unwrap_or_default(),
            event["sub"].as_u64().unwrap_or_default(),
        );
        let entry = last.entry(shard).or_insert_with(|| at.clone());
        if at > *entry {
            *entry = at;
        }
    }
    last
}

/// Payload → deliveries, from the processRecords messages the recorder got.
pub fn protocol_records(files: &BTreeMap<(String, u32), Vec<Value>>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in files
        .values()
        .flatten()
        .filter(|l| l["action"] == "processRecords")
    {
        for record in line["records"].as_array().into_iter().flatten() {
            let data = B64
                .decode(record["data"].as_str().unwrap_or_default())
                .expect("base64");
            *seen
                .entry(String::from_utf8_lossy(&data).into_owned())
                .or_default() += 1;
        }
    }
    seen
}

pub fn line_counts(files: &BTreeMap<(String, u32), Vec<Value>>) -> BTreeMap<(String, u32), usize> {
    files.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

pub fn position_of(record: &Value) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::new(
        record["sequenceNumber"].as_str().unwrap_or_default(),
        record["subSequenceNumber"].as_u64().unwrap_or_default(),
    )
}

pub fn position_of_initialize(line: &Value) -> ExtendedSequenceNumber {
    assert_eq!(line["action"], "initialize", "{line}");
    let sequence = line["sequenceNumber"].as_str().unwrap_or_default();
    let sub = line["subSequenceNumber"].as_u64().unwrap_or_default();
    match sequence {
        "TRIM_HORIZON" => ExtendedSequenceNumber::TRIM_HORIZON,
        "LATEST" => ExtendedSequenceNumber::LATEST,
        _ => ExtendedSequenceNumber::new(sequence, sub),
    }
}

/// The recorder's last successful checkpoint: the last record of the last
/// batch whose checkpoint (at the last record delivered) was answered
/// without error; the initialize position when none was.
pub fn last_checkpointed(lines: &[Value]) -> ExtendedSequenceNumber {
    let mut checkpointed = position_of_initialize(&lines[0]);
    let mut delivered = None;
    for line in lines {
        match line["action"].as_str() {
            Some("processRecords") => {
                if let Some(last) = line["records"].as_array().and_then(|r| r.last()) {
                    delivered = Some(position_of(last));
                }
            }
            Some("checkpoint") if line["error"].is_null() => {
                if let Some(at) = &delivered {
                    checkpointed = at.clone();
                }
            }
            _ => {}
        }
    }
    checkpointed
}

/// How many records a child got after `position`.
pub fn records_after(lines: &[Value], position: &ExtendedSequenceNumber) -> usize {
    lines
        .iter()
        .filter(|l| l["action"] == "processRecords")
        .flat_map(|l| l["records"].as_array().cloned().unwrap_or_default())
        .filter(|r| position_of(r) > *position)
        .count()
}
