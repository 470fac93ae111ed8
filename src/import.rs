//! `sightline import sofatracer FILE...`: SOFATracer's logs into a running Sightline, through its
//! Zipkin intake. A digest line becomes the span SOFATracer's Zipkin reporter would have sent
//! (`sightline_collector::zipkin::digest`), so it is stored exactly as a reported one; a stat
//! log's lines go as they are to the intake's stat endpoint (`zipkin::stat`), which adds their
//! counts to the RED rollups. `--follow` keeps reading what is appended, across SOFATracer's
//! daily rotation.

use std::io::{BufRead, BufReader, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use sightline_collector::zipkin::stat::StatLog;
use sightline_collector::zipkin::{self, digest};

use crate::http_post::{self, Connection};

#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// SOFATracer's digest logs (`*-digest.log`, one JSON span per line) as spans, and its stat
    /// logs (`*-stat.log`, counts per endpoint and period) as RED counts.
    Sofatracer(SofatracerArgs),
}

impl ImportCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ImportCommand::Sofatracer(args) => args.run().await,
        }
    }
}

#[derive(clap::Args)]
pub struct SofatracerArgs {
    /// Digest and stat logs, e.g. `logs/tracelog/spring-mvc-digest.log`. A stat log given with
    /// the digest log of the same calls is skipped: the digest's spans count them already.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Sightline's Zipkin intake: port 9411, or `http://HOST:8080/zipkin`.
    #[arg(long, default_value = "http://127.0.0.1:9411")]
    endpoint: String,
    /// The offset from UTC of the machine that wrote the logs: digest times are its local time.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// Keep reading what is appended (and the new file after a rotation) until interrupted.
    #[arg(long)]
    follow: bool,
    /// Spans (or stat lines) per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds one stat line counts: SOFATracer's `stat_log_interval`.
    #[arg(long, default_value_t = 60)]
    stat_interval: u32,
}

/// Where the lines go: `host:port` and the path the intake is mounted at.
struct Target {
    host: String,
    prefix: String,
    connection: Option<Connection>,
}

impl Target {
    fn parse(endpoint: &str) -> anyhow::Result<Self> {
        let rest = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("--endpoint {endpoint:?}: only http:// is supported"))?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            bail!("--endpoint {endpoint:?} names no host");
        }
        let host = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Target {
            host,
            prefix: prefix.to_string(),
            connection: None,
        })
    }

    /// Posts a body to `path` under the intake; retries while the server is saturated or
    /// unreachable.
    async fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> anyhow::Result<()> {
        let path = format!("{}{path}", self.prefix);
        let headers = format!("Content-Type: {content_type}\r\n");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let connection = match self.connection.take() {
                Some(c) => c,
                None => match http_post::connect(&self.host).await {
                    Ok(c) => c,
                    Err(e) if attempts < 30 => {
                        tracing::warn!("{e:#}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match http_post::post_body(connection, &self.host, &path, &headers, body).await {
                Ok((status, _, connection)) if (200..300).contains(&status) => {
                    self.connection = Some(connection);
                    return Ok(());
                }
                Ok((status, _, _)) if (status == 429 || status >= 500) && attempts < 30 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempts.min(10))).await;
                }
                Ok((status, reply, _)) => bail!(
                    "{}{path} answered {status}: {}",
                    self.host,
                    String::from_utf8_lossy(&reply).trim()
                ),
                // A kept-alive connection the server closed: once more on a new one.
                Err(_) if attempts < 30 => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a log holds.
enum Lines {
    /// One span per line.
    Digest,
    /// Counts per endpoint and period: where they are posted (the stat endpoint with this
    /// log's query), the log as the endpoint reads it (to skip the lines it would refuse, as
    /// a bad digest line is skipped, rather than lose the request they are in), and the lines
    /// waiting to be sent.
    Stat {
        path: String,
        log: StatLog,
        waiting: Vec<String>,
    },
}

/// One log being read: where it stands, and which file (inode) that position is in.
struct Log {
    path: PathBuf,
    /// The log's name: `spring-mvc` for `spring-mvc-digest.log` and `spring-mvc-stat.log`.
    name: String,
    lines: Lines,
    reader: Option<BufReader<std::fs::File>>,
    inode: u64,
    partial: String,
    line: u64,
}

impl Log {
    /// `utc_offset` as given (`+08:00`) and the stat period in seconds go with a stat log's
    /// lines, for the server to read their times by.
    fn new(
        path: &Path,
        utc_offset: &str,
        offset_secs: i64,
        stat_interval: u32,
    ) -> anyhow::Result<Self> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a file name", path.display()))?;
        let base = file_name.split(".log").next().unwrap_or(file_name);
        let (name, lines) = match base.strip_suffix("-stat") {
            Some(name) => (
                name,
                Lines::Stat {
                    path: format!(
                        "{}?log={}&utc_offset={}&interval={}",
                        zipkin::STAT_PATH,
                        http_post::url_encode(name),
                        http_post::url_encode(utc_offset),
                        stat_interval.max(1)
                    ),
                    log: StatLog::new(name, offset_secs, i64::from(stat_interval.max(1))),
                    waiting: Vec::new(),
                },
            ),
            None => (base.strip_suffix("-digest").unwrap_or(base), Lines::Digest),
        };
        Ok(Log {
            path: path.to_path_buf(),
            name: name.to_string(),
            lines,
            reader: None,
            inode: 0,
            partial: String::new(),
            line: 0,
        })
    }

    fn open(&mut self) -> anyhow::Result<bool> {
        match std::fs::File::open(&self.path) {
            Ok(f) => {
                self.inode = f.metadata()?.ino();
                self.reader = Some(BufReader::new(f));
                self.partial.clear();
                self.line = 0;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("open {}", self.path.display())),
        }
    }

    /// The complete lines written since the last call. A line still being written waits for its
    /// newline; a rotated or truncated log is read again from its start.
    fn read(&mut self, out: &mut Vec<(u64, String)>) -> anyhow::Result<()> {
        if self.reader.is_none() && !self.open()? {
            return Ok(());
        }
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(());
            };
            let mut chunk = String::new();
            let n = reader
                .by_ref()
                .take(1 << 20)
                .read_line(&mut chunk)
                .with_context(|| format!("read {}", self.path.display()))?;
            if n == 0 {
                break;
            }
            self.partial.push_str(&chunk);
            if self.partial.ends_with('\n') {
                self.line += 1;
                let line = std::mem::take(&mut self.partial);
                out.push((self.line, line.trim_end().to_string()));
            }
        }
        // At the end of what is there: has the log been rotated or truncated meanwhile?
        let position = match self.reader.as_mut() {
            Some(r) => r.stream_position()?,
            None => 0,
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if m.ino() != self.inode || m.len() < position => {
                self.open()?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// What has been read and not yet sent, and what was sent.
#[derive(Default)]
struct Progress {
    spans: Vec<Value>,
    sent_spans: u64,
    sent_stat_lines: u64,
    skipped: u64,
}

impl Progress {
    /// Sends the spans waiting, and each stat log's lines, when there are at least `min` (all
    /// of them with `min` 1).
    async fn send(
        &mut self,
        target: &mut Target,
        logs: &mut [Log],
        min: usize,
    ) -> anyhow::Result<()> {
        if !self.spans.is_empty() && self.spans.len() >= min {
            let body = serde_json::to_vec(&self.spans)?;
            target
                .post(zipkin::SPANS_PATH, "application/json", &body)
                .await?;
            self.sent_spans += self.spans.len() as u64;
            self.spans.clear();
        }
        for log in logs {
            let Lines::Stat { path, waiting, .. } = &mut log.lines else {
                continue;
            };
            if waiting.is_empty() || waiting.len() < min {
                continue;
            }
            let body = waiting.join("\n");
            target
                .post(path, "application/x-ndjson", body.as_bytes())
                .await?;
            self.sent_stat_lines += waiting.len() as u64;
            waiting.clear();
        }
        Ok(())
    }
}

impl SofatracerArgs {
    async fn run(self) -> anyhow::Result<()> {
        let offset = digest::parse_utc_offset(&self.utc_offset)
            .with_context(|| format!("--utc-offset {:?} is not like +08:00", self.utc_offset))?;
        let mut target = Target::parse(&self.endpoint)?;
        let mut logs = self
            .files
            .iter()
            .map(|p| Log::new(p, &self.utc_offset, offset, self.stat_interval))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The digest of the same calls counts them already (a load-test `shadow/` log is
        // another log).
        let digests: Vec<(Option<PathBuf>, String)> = logs
            .iter()
            .filter(|l| matches!(l.lines, Lines::Digest))
            .map(|l| (l.path.parent().map(Path::to_path_buf), l.name.clone()))
            .collect();
        logs.retain(|l| {
            let counted = matches!(l.lines, Lines::Stat { .. })
                && digests.contains(&(l.path.parent().map(Path::to_path_buf), l.name.clone()));
            if counted {
                tracing::warn!(
                    "{}: skipped, the digest log of the same calls counts them",
                    l.path.display()
                );
            }
            !counted
        });
        if !self.follow {
            for log in &mut logs {
                if !log.open()? {
                    bail!("{}: no such file", log.path.display());
                }
            }
        }
        let mut progress = Progress::default();
        let mut last_send = Instant::now();
        let mut lines = Vec::new();
        loop {
            for i in 0..logs.len() {
                lines.clear();
                logs[i].read(&mut lines)?;
                for (number, line) in lines.drain(..) {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let log = &mut logs[i];
                    match &mut log.lines {
                        Lines::Stat {
                            log: stat, waiting, ..
                        } => match stat.row(&line) {
                            Ok(_) => waiting.push(line),
                            Err(e) => {
                                progress.skipped += 1;
                                tracing::warn!("{}:{number}: {e}; skipped", log.path.display());
                            }
                        },
                        Lines::Digest => match digest::zipkin_span(&line, &log.name, offset) {
                            Ok(span) => progress.spans.push(span),
                            Err(e) => {
                                progress.skipped += 1;
                                tracing::warn!("{}:{number}: {e}; skipped", log.path.display());
                            }
                        },
                    }
                }
                progress.send(&mut target, &mut logs, self.batch).await?;
            }
            if !self.follow {
                break;
            }
            if last_send.elapsed() >= Duration::from_secs(1) {
                progress.send(&mut target, &mut logs, 1).await?;
                tracing::info!(
                    "imported {} spans and {} stat lines so far",
                    progress.sent_spans,
                    progress.sent_stat_lines
                );
                last_send = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        progress.send(&mut target, &mut logs, 1).await?;
        println!(
            "imported {} spans and {} stat lines from {} file(s) to {}{}; {} line(s) skipped",
            progress.sent_spans,
            progress.sent_stat_lines,
            logs.len(),
            target.host,
            target.prefix,
            progress.skipped
        );
        Ok(())
    }
}
