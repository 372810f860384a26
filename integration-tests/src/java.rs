//! The Java originals (the AWS KPL and the Java KCL 2.x) as child processes,
//! for the interop tests: the programs of `interop/java/`, built by
//! `scripts/interop-java` into `interop/java/target/`.
//!
//! Each program talks JSON lines on stdout (see their Javadoc) and keeps its
//! logs on stderr, which goes to a file ([`JavaProcess::log_path`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::Error;

/// The command that builds the Java side.
pub const BUILD_COMMAND: &str = "scripts/interop-java";

/// The built Java programs and the JVM that runs them.
#[derive(Debug, Clone)]
pub struct JavaInterop {
    java: PathBuf,
    /// For `KplProducer` (the AWS KPL 1.0 and its dependencies).
    kpl_classpath: String,
    /// For every other program (the Java KCL 2.x and its dependencies).
    kcl_classpath: String,
    /// For the Java MultiLangDaemon (the KCL's multilang module, logback).
    multilang_classpath: String,
    /// For `Kcl3Consumer` (the Java KCL 3.5.1 and its dependencies).
    kcl3_classpath: String,
    /// For `Kcl3Consumer` on the Java KCL 3.1.3 (`Kcl31Consumer`).
    kcl31_classpath: String,
    logs: PathBuf,
}

/// Why the Java interop tests cannot run.
#[derive(Debug)]
pub enum Unavailable {
    /// `java` or `mvn` is not installed: the tests are skipped.
    ToolMissing(String),
    /// Both are installed but the Java side is not built: the tests fail.
    NotBuilt(String),
}

impl JavaInterop {
    /// Finds `java` and `mvn` on the `PATH` and the build output under
    /// `interop/java/{kpl,kcl,multilang,kcl3,kcl31}/target/` of the repository.
    pub fn find() -> Result<Self, Unavailable> {
        let java = which("java").ok_or_else(|| {
            Unavailable::ToolMissing("`java` is not on the PATH (Java 17 or newer)".into())
        })?;
        which("mvn").ok_or_else(|| {
            Unavailable::ToolMissing("`mvn` is not on the PATH (Maven 3.8+)".into())
        })?;
        let root = repository_root().join("interop/java");
        let classpath = |module: &str| {
            let target = root.join(module).join("target");
            let jar = target.join(format!("interop-{module}.jar"));
            let lib = target.join("lib");
            if jar.is_file() && lib.is_dir() {
                Ok(format!("{}:{}/*", jar.display(), lib.display()))
            } else {
                Err(Unavailable::NotBuilt(format!(
                    "{} or {} is missing: build the Java side with `{BUILD_COMMAND}` \
                     (scripts/test does it)",
                    jar.display(),
                    lib.display()
                )))
            }
        };
        let kpl_classpath = classpath("kpl")?;
        let kcl_classpath = classpath("kcl")?;
        let multilang_classpath = classpath("multilang")?;
        let kcl3_classpath = classpath("kcl3")?;
        let kcl31_classpath = classpath("kcl31")?;
        let logs = root.join("target/logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| Unavailable::NotBuilt(format!("cannot create {}: {e}", logs.display())))?;
        Ok(Self {
            java,
            kpl_classpath,
            kcl_classpath,
            multilang_classpath,
            kcl3_classpath,
            kcl31_classpath,
            logs,
        })
    }

    /// Starts `rs.kinesis.interop.<main>` with `args` (on the KPL's
    /// classpath for `KplProducer`, the KCL 3.5.1's for `Kcl3Consumer`, the
    /// KCL 3.1.3's for `Kcl31Consumer` — the same program —, the KCL 2.x's
    /// otherwise); its stderr goes to `interop/java/target/logs/<name>.log`.
    pub fn spawn(&self, main: &str, name: &str, args: &[String]) -> Result<JavaProcess, Error> {
        if main == "Kcl31Consumer" {
            return self.spawn_on(
                &self.kcl31_classpath,
                "rs.kinesis.interop.Kcl3Consumer",
                name,
                args,
                &[],
            );
        }
        self.spawn_class(&format!("rs.kinesis.interop.{main}"), name, args, &[])
    }

    /// Starts the class `class` (fully qualified: a Java original's own main,
    /// such as `software.amazon.kinesis.multilang.MultiLangDaemon`) on its
    /// module's classpath (`multilang/` for the MultiLangDaemon, `kpl/` for
    /// `rs.kinesis.interop.KplProducer`, `kcl/` otherwise),
    /// with `env` added to its environment.
    pub fn spawn_class(
        &self,
        class: &str,
        name: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<JavaProcess, Error> {
        let classpath = if class == "rs.kinesis.interop.KplProducer" {
            &self.kpl_classpath
        } else if class.starts_with("software.amazon.kinesis.multilang.") {
            &self.multilang_classpath
        } else if class == "rs.kinesis.interop.Kcl3Consumer" {
            &self.kcl3_classpath
        } else {
            &self.kcl_classpath
        };
        self.spawn_on(classpath, class, name, args, env)
    }

    fn spawn_on(
        &self,
        classpath: &str,
        class: &str,
        name: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<JavaProcess, Error> {
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Io {
            what: "creating a Java log file",
            source,
        })?;
        let mut command = Command::new(&self.java);
        command
            // A short-lived JVM on a small machine: start fast.
            .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx768m"])
            // The SDK v2 speaks JSON to Kinesis, as the Rust SDK does.
            .arg("-Daws.cborEnabled=false")
            .arg("-Daws.java.v1.disableDeprecationAnnouncement=true")
            .arg("-cp")
            .arg(classpath)
            .arg(class)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // Never ask the EC2 instance metadata service (a non-loopback
            // address) for a region or credentials.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_REGION", crate::endpoints::REGION)
            .env("AWS_ACCESS_KEY_ID", crate::endpoints::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", crate::endpoints::SECRET_ACCESS_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| Error::Io {
            what: "starting java",
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| Error::Io {
            what: "reading the Java program's output",
            source: std::io::Error::other("no stdout"),
        })?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (events, receiver) = mpsc::unbounded_channel();
        let kept = lines.clone();
        let reader = tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    tracing::debug!(%line, "not a JSON line from Java");
                    continue;
                };
                if let Ok(mut kept) = kept.lock() {
                    kept.push(value.clone());
                }
                let _ = events.send(value);
            }
        });
        Ok(JavaProcess {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            events: receiver,
            reader: Some(reader),
            log_path,
        })
    }
}

/// A running Java program.
#[derive(Debug)]
pub struct JavaProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    events: mpsc::UnboundedReceiver<Value>,
    reader: Option<tokio::task::JoinHandle<()>>,
    log_path: PathBuf,
}

impl JavaProcess {
    /// Where its stderr (the Java logs) goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Writes to its stdin.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let io = |source| Error::Io {
            what: "writing to the Java program",
            source,
        };
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io(std::io::Error::other("stdin closed")))?;
        stdin.write_all(bytes).await.map_err(io)?;
        stdin.flush().await.map_err(io)
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every JSON line seen so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The lines seen so far whose `event` is `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.lines
            .lock()
            .map(|lines| {
                lines
                    .iter()
                    .filter(|line| line["event"] == event)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for the next line with `event` (earlier lines of other events
    /// are passed over; all stay in [`lines`](Self::lines)).
    pub async fn next_event(&mut self, event: &str, timeout: Duration) -> Result<Value, Error> {
        let wait = async {
            while let Some(line) = self.events.recv().await {
                if line["event"] == event {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(Error::Timeout(format!(
                "{}: exited before `{event}`; log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(40)
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "{}: no `{event}` within {timeout:?}; log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(40)
            ))),
        }
    }

    /// Waits until `done(lines so far)` holds, checking every 100 ms.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let finished = self.lines.lock().map(|l| done(&l)).unwrap_or(false);
            if finished {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{}: {what} within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit (and its output to be read), killing
    /// it after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, Error> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.map_err(|source| Error::Io {
                what: "waiting for java",
                source,
            })?,
            Err(_) => {
                let _ = self.child.kill().await;
                return Err(Error::Timeout(format!(
                    "{} to exit within {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    self.log_tail(40)
                )));
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        Ok(status)
    }

    /// Kills the process at once (SIGKILL: no lease is released, nothing
    /// flushed) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }
}

/// The repository's root (the parent of `integration-tests/`).
pub fn repository_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
