//! `sightline serve` options: flags, then `SIGHTLINE_*` environment variables, then an optional
//! TOML file, then defaults. Validated once, here, and passed down explicitly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// The options of `sightline serve`. The TOML file holds the same keys (snake_case), so one struct
/// serves both; unknown keys in the file are an error.
#[derive(Debug, Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the options below (snake_case keys, e.g. `data_dir = "/var/lib/sightline"`).
    #[arg(long, env = "SIGHTLINE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store [default: ./sightline-data]
    #[arg(long, env = "SIGHTLINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 0.0.0.0:4317]
    #[arg(long, env = "SIGHTLINE_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 0.0.0.0:4318]
    #[arg(long, env = "SIGHTLINE_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// HTTP address for health, API and UI [default: 0.0.0.0:8080]
    #[arg(long, env = "SIGHTLINE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// SOFALookout gateway address; Lookout clients send to port 7200 of the host they are
    /// given [default: 0.0.0.0:7200]
    #[arg(long, env = "SIGHTLINE_LOOKOUT_ADDR")]
    pub lookout_addr: Option<SocketAddr>,
    /// Zipkin v2 span intake (`POST /api/v2/spans`); Zipkin and SOFATracer reporters send to
    /// port 9411 by default. The same intake is under `/zipkin` on the HTTP port
    /// [default: 0.0.0.0:9411]
    #[arg(long, env = "SIGHTLINE_ZIPKIN_ADDR")]
    pub zipkin_addr: Option<SocketAddr>,
    /// How long spans are kept, e.g. `7d`, `36h` [default: 7d]
    #[arg(long, env = "SIGHTLINE_RETENTION")]
    pub retention: Option<String>,
    /// Memory for spans in flight — request bodies, the WAL queue, buffers, Parquet writes and
    /// merges — e.g. `1GiB`, `512MiB`. The larger of a quarter of it and 384 MiB is kept for
    /// memory not tracked per span; past the rest, writers get 503 / UNAVAILABLE [default: 1GiB]
    #[arg(long, env = "SIGHTLINE_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// Longest time an acknowledged span waits in memory before it is written to Parquet
    /// [default: 5s]
    #[arg(long, env = "SIGHTLINE_SEAL_MAX_AGE")]
    pub seal_max_age: Option<String>,
    /// Buffer size that triggers a Parquet write [default: 128MiB]
    #[arg(long, env = "SIGHTLINE_SEAL_MAX_BYTES")]
    pub seal_max_bytes: Option<String>,
    /// Spans per file that compaction aims for [default: 1000000]
    #[arg(long, env = "SIGHTLINE_COMPACTION_TARGET_ROWS")]
    pub compaction_target_rows: Option<u64>,
    /// How often retention and compaction run [default: 30s]
    #[arg(long, env = "SIGHTLINE_MAINTENANCE_INTERVAL")]
    pub maintenance_interval: Option<String>,
    /// How long the first half of a call (client or server span) waits for the other before the
    /// service graph gives up on pairing them [default: 10s]
    #[arg(long, env = "SIGHTLINE_EDGE_WAIT")]
    pub edge_wait: Option<String>,
    /// Distinct RED series (service, operation, kind, status) and service-graph edges kept per
    /// hour; past it they are folded into `__other__` [default: 10000]
    #[arg(long, env = "SIGHTLINE_MAX_SERIES_PER_HOUR")]
    pub max_series_per_hour: Option<usize>,
    /// Metric samples older than this (before their arrival) are refused; within it they are
    /// taken in any order, as Prometheus's out-of-order window [default: 10m]
    #[arg(long, env = "SIGHTLINE_OUT_OF_ORDER_WINDOW")]
    pub out_of_order_window: Option<String>,
    /// Series with a sample in this hour or the last, beyond which new series are refused
    /// [default: 2000000]
    #[arg(long, env = "SIGHTLINE_MAX_ACTIVE_SERIES")]
    pub max_active_series: Option<usize>,
    /// Active series one metric may have, beyond which its new series are refused
    /// [default: 1000000]
    #[arg(long, env = "SIGHTLINE_MAX_SERIES_PER_METRIC")]
    pub max_series_per_metric: Option<usize>,
    /// OTLP resource attributes written as labels on every series of the resource (comma
    /// separated, e.g. `deployment.environment,k8s.namespace.name`); the others go to
    /// `target_info` only
    #[arg(
        long,
        env = "SIGHTLINE_OTLP_PROMOTE_RESOURCE_ATTRIBUTES",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub otlp_promote_resource_attributes: Vec<String>,
    /// A PromQL query's time budget; a request may ask for less [default: 2m]
    #[arg(long, env = "SIGHTLINE_QUERY_TIMEOUT")]
    pub query_timeout: Option<String>,
    /// Samples one PromQL query may hold at once [default: 50000000]
    #[arg(long, env = "SIGHTLINE_QUERY_MAX_SAMPLES")]
    pub query_max_samples: Option<usize>,
    /// Series one PromQL query may fetch over all its selectors [default: 1000000]
    #[arg(long, env = "SIGHTLINE_QUERY_MAX_SERIES")]
    pub query_max_series: Option<usize>,
    /// PromQL queries slower than this are logged [default: 500ms]
    #[arg(long, env = "SIGHTLINE_SLOW_QUERY")]
    pub slow_query: Option<String>,
    /// Refuse PromQL selectors without a matcher on a label besides the metric name
    #[arg(long, env = "SIGHTLINE_REQUIRE_LABEL_MATCHER")]
    #[serde(default)]
    pub require_label_matcher: bool,
    /// Also run the demo shop, sending its traces to this server
    #[arg(long, env = "SIGHTLINE_DEMO")]
    #[serde(default)]
    pub demo: bool,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub lookout_addr: SocketAddr,
    pub zipkin_addr: SocketAddr,
    pub retention: Duration,
    pub memory_budget: usize,
    pub seal_max_age: Duration,
    pub seal_max_bytes: usize,
    pub compaction_target_rows: u64,
    pub maintenance_interval: Duration,
    pub edge_wait: Duration,
    pub max_series_per_hour: usize,
    pub out_of_order_window: Duration,
    pub max_active_series: usize,
    pub max_series_per_metric: usize,
    pub otlp_promote_resource_attributes: Vec<String>,
    pub query_timeout: Duration,
    pub query_max_samples: usize,
    pub query_max_series: usize,
    pub slow_query: Duration,
    pub require_label_matcher: bool,
    pub demo: bool,
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file: ServeArgs = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap_or_else(|_| unreachable!()) };
        Ok(ServeConfig {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("sightline-data")),
            otlp_grpc_addr: self
                .otlp_grpc_addr
                .or(file.otlp_grpc_addr)
                .unwrap_or_else(|| addr("0.0.0.0:4317")),
            otlp_http_addr: self
                .otlp_http_addr
                .or(file.otlp_http_addr)
                .unwrap_or_else(|| addr("0.0.0.0:4318")),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| addr("0.0.0.0:8080")),
            lookout_addr: self
                .lookout_addr
                .or(file.lookout_addr)
                .unwrap_or_else(|| addr("0.0.0.0:7200")),
            zipkin_addr: self
                .zipkin_addr
                .or(file.zipkin_addr)
                .unwrap_or_else(|| addr("0.0.0.0:9411")),
            retention: parse_duration(
                "retention",
                self.retention.or(file.retention).as_deref().unwrap_or("7d"),
            )?,
            memory_budget: parse_size(
                "memory_budget",
                self.memory_budget
                    .or(file.memory_budget)
                    .as_deref()
                    .unwrap_or("1GiB"),
            )?,
            seal_max_age: parse_duration(
                "seal_max_age",
                self.seal_max_age
                    .or(file.seal_max_age)
                    .as_deref()
                    .unwrap_or("5s"),
            )?,
            seal_max_bytes: parse_size(
                "seal_max_bytes",
                self.seal_max_bytes
                    .or(file.seal_max_bytes)
                    .as_deref()
                    .unwrap_or("128MiB"),
            )?,
            compaction_target_rows: self
                .compaction_target_rows
                .or(file.compaction_target_rows)
                .unwrap_or(1_000_000),
            maintenance_interval: parse_duration(
                "maintenance_interval",
                self.maintenance_interval
                    .or(file.maintenance_interval)
                    .as_deref()
                    .unwrap_or("30s"),
            )?,
            edge_wait: parse_duration(
                "edge_wait",
                self.edge_wait
                    .or(file.edge_wait)
                    .as_deref()
                    .unwrap_or("10s"),
            )?,
            max_series_per_hour: self
                .max_series_per_hour
                .or(file.max_series_per_hour)
                .unwrap_or(10_000),
            out_of_order_window: parse_duration(
                "out_of_order_window",
                self.out_of_order_window
                    .or(file.out_of_order_window)
                    .as_deref()
                    .unwrap_or("10m"),
            )?,
            max_active_series: self
                .max_active_series
                .or(file.max_active_series)
                .unwrap_or(2_000_000),
            max_series_per_metric: self
                .max_series_per_metric
                .or(file.max_series_per_metric)
                .unwrap_or(1_000_000),
            otlp_promote_resource_attributes: if self.otlp_promote_resource_attributes.is_empty() {
                file.otlp_promote_resource_attributes
            } else {
                self.otlp_promote_resource_attributes
            },
            query_timeout: parse_duration(
                "query_timeout",
                self.query_timeout
                    .or(file.query_timeout)
                    .as_deref()
                    .unwrap_or("2m"),
            )?,
            query_max_samples: self
                .query_max_samples
                .or(file.query_max_samples)
                .unwrap_or(50_000_000),
            query_max_series: self
                .query_max_series
                .or(file.query_max_series)
                .unwrap_or(1_000_000),
            slow_query: parse_duration(
                "slow_query",
                self.slow_query
                    .or(file.slow_query)
                    .as_deref()
                    .unwrap_or("500ms"),
            )?,
            require_label_matcher: self.require_label_matcher || file.require_label_matcher,
            demo: self.demo || file.demo,
        })
    }
}

/// `500ms`, `10s`, `5m`, `36h`, `7d`, or a number of seconds.
pub fn parse_duration(name: &str, s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{name}: {s:?} is not a duration like 30s, 5m, 7d"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => bail!("{name}: unknown duration unit {other:?} (use ms, s, m, h or d)"),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        bail!("{name}: must be positive, got {s:?}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `1GiB`, `512MiB`, `64KiB`, `1GB`, or a number of bytes.
pub fn parse_size(name: &str, s: &str) -> anyhow::Result<usize> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("{name}: {s:?} is not a size like 512MiB or 1GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => bail!("{name}: unknown size unit {other:?} (use KiB, MiB or GiB)"),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        bail!("{name}: must be at least one byte, got {s:?}");
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("x", "7d").unwrap(),
            Duration::from_secs(604_800)
        );
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("x", "5 fortnights").is_err());
        assert_eq!(parse_size("x", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("x", "512MiB").unwrap(), 512 << 20);
        assert!(parse_size("x", "lots").is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sightline.toml");
        std::fs::write(&path, "retention = \"2d\"\nmemory_budget = \"256MiB\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            retention: Some("3h".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.retention, Duration::from_secs(3 * 3600));
        assert_eq!(c.memory_budget, 256 << 20);
        assert_eq!(c.seal_max_age, Duration::from_secs(5));
        std::fs::write(&path, "retnetion = \"2d\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }
}
