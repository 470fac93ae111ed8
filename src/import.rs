//! `sightline import sofatracer FILE...`: SOFATracer's digest logs into a running Sightline,
//! through its Zipkin intake — each line becomes the span SOFATracer's Zipkin reporter would have
//! sent (`sightline_collector::zipkin::digest`), so it is stored exactly as a reported one.
//! `--follow` keeps reading what is appended, across SOFATracer's daily rotation.

use std::io::{BufRead, BufReader, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use sightline_collector::zipkin::{self, digest};

use crate::http_post::{self, Connection};

#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// SOFATracer digest logs (`*-digest.log`, one JSON span per line) as spans.
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
    /// Digest logs, e.g. `logs/tracelog/spring-mvc-digest.log`.
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
    /// Spans per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

/// Where the spans go: `host:port` and the path of the intake.
struct Target {
    host: String,
    path: String,
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
            path: format!("{prefix}{}", zipkin::SPANS_PATH),
            connection: None,
        })
    }

    /// Posts a batch of spans; retries while the server is saturated or unreachable.
    async fn send(&mut self, spans: &[Value]) -> anyhow::Result<()> {
        let body = serde_json::to_vec(spans)?;
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
            match http_post::post_body(
                connection,
                &self.host,
                &self.path,
                "Content-Type: application/json\r\n",
                &body,
            )
            .await
            {
                Ok((status, _, connection)) if (200..300).contains(&status) => {
                    self.connection = Some(connection);
                    return Ok(());
                }
                Ok((status, _, _)) if (status == 429 || status >= 500) && attempts < 30 => {
                    tokio::time::sleep(Duration::from_millis(200 * attempts.min(10))).await;
                }
                Ok((status, reply, _)) => bail!(
                    "{}{} answered {status}: {}",
                    self.host,
                    self.path,
                    String::from_utf8_lossy(&reply).trim()
                ),
                // A kept-alive connection the server closed: once more on a new one.
                Err(_) if attempts < 30 => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One log being read: where it stands, and which file (inode) that position is in.
struct Log {
    path: PathBuf,
    name: String,
    reader: Option<BufReader<std::fs::File>>,
    inode: u64,
    partial: String,
    line: u64,
}

impl Log {
    fn new(path: &Path) -> anyhow::Result<Self> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a file name", path.display()))?;
        if file_name.contains("-stat.log") {
            bail!(
                "{}: stat logs are not imported (their counts are already aggregated); give the digest logs",
                path.display()
            );
        }
        let name = file_name
            .trim_end_matches(".log")
            .trim_end_matches("-digest")
            .to_string();
        Ok(Log {
            path: path.to_path_buf(),
            name,
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

impl SofatracerArgs {
    async fn run(self) -> anyhow::Result<()> {
        let offset = digest::parse_utc_offset(&self.utc_offset)
            .with_context(|| format!("--utc-offset {:?} is not like +08:00", self.utc_offset))?;
        let mut target = Target::parse(&self.endpoint)?;
        let mut logs = self
            .files
            .iter()
            .map(|p| Log::new(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !self.follow {
            for log in &mut logs {
                if !log.open()? {
                    bail!("{}: no such file", log.path.display());
                }
            }
        }
        let (mut spans, mut skipped, mut sent) = (Vec::new(), 0u64, 0u64);
        let mut last_send = Instant::now();
        loop {
            let mut lines = Vec::new();
            for log in &mut logs {
                lines.clear();
                log.read(&mut lines)?;
                for (number, line) in &lines {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match digest::zipkin_span(line, &log.name, offset) {
                        Ok(span) => spans.push(span),
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!("{}:{number}: {e}; skipped", log.path.display());
                        }
                    }
                    if spans.len() >= self.batch {
                        target.send(&spans).await?;
                        sent += spans.len() as u64;
                        spans.clear();
                        last_send = Instant::now();
                    }
                }
            }
            if !self.follow {
                break;
            }
            if !spans.is_empty() && last_send.elapsed() >= Duration::from_secs(1) {
                target.send(&spans).await?;
                sent += spans.len() as u64;
                tracing::info!("imported {sent} spans so far");
                spans.clear();
                last_send = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !spans.is_empty() {
            target.send(&spans).await?;
            sent += spans.len() as u64;
        }
        println!(
            "imported {sent} spans from {} file(s) to {}{}; {skipped} line(s) skipped",
            logs.len(),
            target.host,
            target.path
        );
        Ok(())
    }
}
