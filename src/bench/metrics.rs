//! `sightline bench metrics`: Prometheus remote write 1.0 of node_exporter-like targets (about
//! 800 series each: counters, gauges and histograms, a 15 s interval), enough targets for a
//! million active series, encoded once and sent — the same bodies, by the same client — to
//! Sightline, to VictoriaMetrics (Debian's `victoria-metrics`) and to Prometheus (Debian's,
//! with its remote-write receiver). For each it prints acknowledged samples/s (Sightline
//! acknowledges after the WAL's fsync; VictoriaMetrics and Prometheus before theirs), acknowledgement
//! latency, bytes per sample on disk after compaction beside the data's entropy floor, peak RSS
//! and CPU seconds per million samples; then OTLP metrics samples/s into Sightline.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sightline_collector::remote_write::decode::encode::{write_request_v1, Series};

use super::{http_call, LocalServer};

#[derive(Args)]
pub struct MetricsArgs {
    /// Scrape targets of about 800 series each (1,250 make a million).
    #[arg(long, default_value_t = 1250)]
    targets: usize,
    /// Scrapes of every target (15 s apart, ending now).
    #[arg(long, default_value_t = 40)]
    intervals: usize,
    /// Samples per remote-write request (Prometheus 2's `max_samples_per_send`).
    #[arg(long, default_value_t = 2000)]
    samples_per_request: usize,
    /// Requests in flight (Prometheus's shards).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Which receivers to measure, in order.
    #[arg(long, default_value = "sightline,victoriametrics,prometheus")]
    peers: String,
    /// Data points sent over OTLP/HTTP to Sightline afterwards (0 for none).
    #[arg(long, default_value_t = 2_000_000)]
    otlp_points: usize,
    /// Extra flags for the Sightline server this command starts. The data is sent faster than
    /// it was scraped, so its oldest samples are older than the default out-of-order window by
    /// the time they arrive.
    #[arg(long, default_value = "--out-of-order-window 2h")]
    server_args: String,
}

const INTERVAL_MS: i64 = 15_000;

/// How one series changes from scrape to scrape.
#[derive(Clone, Copy)]
enum Change {
    /// Grows by a uniform integer in [0, max), over `scale`.
    Counter {
        max: u32,
        scale: f64,
    },
    /// Grows rarely: with probability `p`, by a uniform integer in [1, max].
    Rare {
        p: f64,
        max: u32,
    },
    /// Moves by a uniform integer in [-max, max], over `scale`.
    Gauge {
        max: u32,
        scale: f64,
    },
    Constant,
}

impl Change {
    /// Bits of randomness one scrape adds: what no encoding can do without.
    fn entropy_bits(self) -> f64 {
        match self {
            Change::Counter { max, .. } => f64::from(max).log2(),
            Change::Rare { p, max } => {
                let h = -(p * p.log2() + (1.0 - p) * (1.0 - p).log2());
                h + p * f64::from(max).log2()
            }
            Change::Gauge { max, .. } => f64::from(2 * max + 1).log2(),
            Change::Constant => 0.0,
        }
    }

    fn step(self, v: f64, rng: &mut SmallRng) -> f64 {
        match self {
            Change::Counter { max, scale } => v + f64::from(rng.random_range(0..max)) / scale,
            Change::Rare { p, max } => {
                if rng.random_bool(p) {
                    v + f64::from(rng.random_range(1..=max))
                } else {
                    v
                }
            }
            Change::Gauge { max, scale } => {
                let d = f64::from(rng.random_range(0..=2 * max)) - f64::from(max);
                (v + d / scale).max(0.0)
            }
            Change::Constant => v,
        }
    }
}

/// One series of a target: name, labels besides job and instance, how it changes.
struct SeriesTemplate {
    labels: Vec<(String, String)>,
    change: Change,
    start: f64,
}

/// The series one node_exporter-like target exposes (about 800).
fn target_template() -> Vec<SeriesTemplate> {
    let mut out = Vec::new();
    let mut add = |name: &str, labels: Vec<(&str, String)>, change: Change, start: f64| {
        let mut l = vec![("__name__".to_string(), name.to_string())];
        l.extend(labels.into_iter().map(|(k, v)| (k.to_string(), v)));
        out.push(SeriesTemplate {
            labels: l,
            change,
            start,
        });
    };
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    for cpu in 0..8 {
        for mode in modes {
            add(
                "node_cpu_seconds_total",
                vec![("cpu", cpu.to_string()), ("mode", mode.into())],
                Change::Counter {
                    max: 1500,
                    scale: 100.0,
                },
                123_456.78,
            );
        }
        for kind in ["dropped", "processed", "times_squeezed"] {
            add(
                &format!("node_softnet_{kind}_total"),
                vec![("cpu", cpu.to_string())],
                Change::Rare { p: 0.3, max: 50 },
                1000.0,
            );
        }
        for irq in 0..36 {
            add(
                "node_interrupts_total",
                vec![
                    ("cpu", cpu.to_string()),
                    ("devices", format!("dev{irq}")),
                    ("type", format!("{irq}")),
                ],
                Change::Rare { p: 0.2, max: 200 },
                5000.0,
            );
        }
        add(
            "node_cpu_scaling_frequency_hertz",
            vec![("cpu", cpu.to_string())],
            Change::Gauge {
                max: 50,
                scale: 1e-6,
            },
            2.4e9,
        );
    }
    for device in ["eth0", "eth1", "lo", "docker0"] {
        for (m, change) in [
            (
                "receive_bytes",
                Change::Counter {
                    max: 1_000_000,
                    scale: 1.0,
                },
            ),
            (
                "transmit_bytes",
                Change::Counter {
                    max: 1_000_000,
                    scale: 1.0,
                },
            ),
            (
                "receive_packets",
                Change::Counter {
                    max: 2000,
                    scale: 1.0,
                },
            ),
            (
                "transmit_packets",
                Change::Counter {
                    max: 2000,
                    scale: 1.0,
                },
            ),
            ("receive_errs", Change::Rare { p: 0.01, max: 3 }),
            ("transmit_errs", Change::Rare { p: 0.01, max: 3 }),
            ("receive_drop", Change::Rare { p: 0.02, max: 5 }),
            ("transmit_drop", Change::Rare { p: 0.02, max: 5 }),
        ] {
            add(
                &format!("node_network_{m}_total"),
                vec![("device", device.into())],
                change,
                1e9,
            );
        }
        add(
            "node_network_up",
            vec![("device", device.into())],
            Change::Constant,
            1.0,
        );
        add(
            "node_network_mtu_bytes",
            vec![("device", device.into())],
            Change::Constant,
            1500.0,
        );
    }
    for device in ["sda", "sdb", "nvme0n1", "nvme1n1"] {
        for (m, change) in [
            (
                "reads_completed_total",
                Change::Counter {
                    max: 300,
                    scale: 1.0,
                },
            ),
            (
                "writes_completed_total",
                Change::Counter {
                    max: 500,
                    scale: 1.0,
                },
            ),
            (
                "read_bytes_total",
                Change::Counter {
                    max: 4_000_000,
                    scale: 1.0,
                },
            ),
            (
                "written_bytes_total",
                Change::Counter {
                    max: 8_000_000,
                    scale: 1.0,
                },
            ),
            (
                "io_time_seconds_total",
                Change::Counter {
                    max: 1500,
                    scale: 1000.0,
                },
            ),
        ] {
            add(
                &format!("node_disk_{m}"),
                vec![("device", device.into())],
                change,
                1e6,
            );
        }
    }
    for i in 0..10 {
        let labels = || {
            vec![
                ("device", format!("/dev/sd{i}")),
                ("fstype", "ext4".to_string()),
                ("mountpoint", format!("/mnt/{i}")),
            ]
        };
        add(
            "node_filesystem_size_bytes",
            labels(),
            Change::Constant,
            1e12,
        );
        add(
            "node_filesystem_avail_bytes",
            labels(),
            Change::Gauge {
                max: 100_000,
                scale: 1.0,
            },
            4e11,
        );
        add(
            "node_filesystem_free_bytes",
            labels(),
            Change::Gauge {
                max: 100_000,
                scale: 1.0,
            },
            5e11,
        );
    }
    for i in 0..60 {
        add(
            &format!("node_memory_field{i}_bytes"),
            vec![],
            Change::Gauge {
                max: 10_000,
                scale: 0.001,
            },
            8e9,
        );
    }
    for i in 0..40 {
        add(
            "node_hwmon_temp_celsius",
            vec![
                ("chip", format!("chip{}", i / 8)),
                ("sensor", format!("temp{}", i % 8)),
            ],
            Change::Gauge {
                max: 5,
                scale: 10.0,
            },
            45.0,
        );
    }
    for i in 0..109 {
        add(
            &format!("node_netstat_field{i}_total"),
            vec![],
            Change::Rare { p: 0.5, max: 100 },
            1e5,
        );
    }
    for m in [
        "node_load1",
        "node_load5",
        "node_load15",
        "node_procs_running",
        "node_procs_blocked",
    ] {
        add(
            m,
            vec![],
            Change::Gauge {
                max: 20,
                scale: 100.0,
            },
            2.0,
        );
    }
    // Two classic histograms over four handlers: 12 buckets, sum and count.
    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for family in [
        "http_request_duration_seconds",
        "scrape_collector_duration_seconds",
    ] {
        for handler in ["/metrics", "/api", "/health", "/debug"] {
            for (i, le) in bounds.iter().enumerate() {
                add(
                    &format!("{family}_bucket"),
                    vec![("handler", handler.into()), ("le", (*le).into())],
                    Change::Counter {
                        max: 10 + 20 * i as u32,
                        scale: 1.0,
                    },
                    1000.0 * (i + 1) as f64,
                );
            }
            add(
                &format!("{family}_sum"),
                vec![("handler", handler.into())],
                Change::Counter {
                    max: 5000,
                    scale: 1000.0,
                },
                500.0,
            );
            add(
                &format!("{family}_count"),
                vec![("handler", handler.into())],
                Change::Counter {
                    max: 250,
                    scale: 1.0,
                },
                12_000.0,
            );
        }
    }
    out
}

/// The remote-write bodies of the whole run, and what they hold.
struct Workload {
    /// Snappy-compressed `WriteRequest`s, in send order (scrape after scrape).
    bodies: Vec<Vec<u8>>,
    samples: u64,
    series: u64,
    /// Bits of randomness in all the values: the floor under any encoding.
    entropy_bits: f64,
    raw_bytes: u64,
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn workload(args: &MetricsArgs) -> Workload {
    let template = target_template();
    let per_target = template.len();
    let mut rng = SmallRng::seed_from_u64(7);
    // Scrapes end now; each target scrapes at its own offset within the interval.
    let last = now_ms() / INTERVAL_MS * INTERVAL_MS;
    let first = last - (args.intervals as i64 - 1) * INTERVAL_MS;
    let instances: Vec<String> = (0..args.targets)
        .map(|t| format!("host-{t:05}:9100"))
        .collect();
    let offsets: Vec<i64> = (0..args.targets)
        .map(|t| -(((t as i64) * 7919) % INTERVAL_MS))
        .collect();
    let mut values: Vec<f64> = (0..args.targets)
        .flat_map(|_| template.iter().map(|s| s.start))
        .collect();
    let mut entropy_bits = 0.0;
    let mut bodies = Vec::new();
    let mut raw_bytes = 0u64;
    let mut pending: Vec<Series<'_>> = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    let mut flush =
        |pending: &mut Vec<Series<'_>>, bodies: &mut Vec<Vec<u8>>, raw_bytes: &mut u64| {
            if pending.is_empty() {
                return;
            }
            let raw = write_request_v1(pending);
            *raw_bytes += raw.len() as u64;
            bodies.push(encoder.compress_vec(&raw).unwrap_or_default());
            pending.clear();
        };
    for k in 0..args.intervals {
        let ts_base = first + k as i64 * INTERVAL_MS;
        for t in 0..args.targets {
            let ts = ts_base + offsets[t];
            for (i, s) in template.iter().enumerate() {
                let v = &mut values[t * per_target + i];
                if k > 0 {
                    *v = s.change.step(*v, &mut rng);
                    entropy_bits += s.change.entropy_bits();
                }
                let mut labels: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                labels.push(("instance", instances[t].as_str()));
                labels.push(("job", "node"));
                pending.push((labels, vec![(*v, ts)]));
                if pending.len() == args.samples_per_request {
                    flush(&mut pending, &mut bodies, &mut raw_bytes);
                }
            }
        }
    }
    flush(&mut pending, &mut bodies, &mut raw_bytes);
    Workload {
        bodies,
        samples: (args.targets * per_target * args.intervals) as u64,
        series: (args.targets * per_target) as u64,
        entropy_bits,
        raw_bytes,
    }
}

/// User + system CPU seconds of a process so far.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
}

pub(super) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn wait_ready(addr: &str, path: &str, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_call(addr, "GET", path).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not come up on {addr}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// A peer process killed when dropped.
pub(super) struct Peer {
    pub(super) child: Child,
    pub(super) dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A receiver under measurement.
pub(super) enum Receiver {
    Sightline(LocalServer),
    Victoria(Peer, String),
    Prometheus(Peer, String),
}

impl Receiver {
    pub(super) fn start(name: &str, server_args: &str) -> anyhow::Result<Self> {
        Self::start_with(name, server_args, Path::new("prometheus"))
    }

    /// [`Self::start`] with another Prometheus binary than Debian's.
    pub(super) fn start_with(
        name: &str,
        server_args: &str,
        prometheus: &Path,
    ) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("sightline-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        match name {
            "sightline" => Ok(Receiver::Sightline(LocalServer::start_in(
                dir,
                true,
                server_args,
                None,
            )?)),
            "victoriametrics" => {
                let addr = format!("127.0.0.1:{}", free_port()?);
                let child = Command::new("victoria-metrics")
                    .arg(format!("-storageDataPath={}", dir.display()))
                    .arg(format!("-httpListenAddr={addr}"))
                    .arg("-retentionPeriod=1y")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("victoria-metrics (Debian's package)")?;
                let peer = Peer { child, dir };
                wait_ready(&addr, "/health", "VictoriaMetrics")?;
                Ok(Receiver::Victoria(peer, addr))
            }
            "prometheus" => {
                let addr = format!("127.0.0.1:{}", free_port()?);
                let config = dir.join("prometheus.yml");
                std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
                let child = Command::new(prometheus)
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.join("data").display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--web.enable-remote-write-receiver")
                    .arg("--web.enable-admin-api")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| {
                        format!("{} (Debian's package, or a build)", prometheus.display())
                    })?;
                let peer = Peer { child, dir };
                wait_ready(&addr, "/-/ready", "Prometheus")?;
                Ok(Receiver::Prometheus(peer, addr))
            }
            other => bail!("unknown peer {other}: use sightline, victoriametrics or prometheus"),
        }
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Receiver::Sightline(_) => "Sightline",
            Receiver::Victoria(..) => "VictoriaMetrics",
            Receiver::Prometheus(..) => "Prometheus",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Receiver::Sightline(s) => s.pid(),
            Receiver::Victoria(p, _) | Receiver::Prometheus(p, _) => p.child.id(),
        }
    }

    /// Host and path of its remote-write endpoint.
    pub(super) fn write_endpoint(&self) -> (String, &'static str) {
        match self {
            Receiver::Sightline(s) => (s.http.clone(), "/prometheus/api/v1/write"),
            Receiver::Victoria(_, a) | Receiver::Prometheus(_, a) => (a.clone(), "/api/v1/write"),
        }
    }

    /// Bytes on disk once the receiver has made its data as compact as it does.
    fn compacted_bytes(&self) -> anyhow::Result<u64> {
        match self {
            Receiver::Sightline(s) => {
                http_call(&s.http, "POST", "/api/v1/admin/compact")?;
                let status: serde_json::Value =
                    serde_json::from_str(&http_call(&s.http, "GET", "/api/v1/status/storage")?)?;
                Ok(status["tables"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter(|t| {
                                t["name"].as_str().is_some_and(|n| n.starts_with("metric_"))
                            })
                            .map(|t| t["bytes_in_files"].as_u64().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0))
            }
            Receiver::Victoria(p, a) => {
                http_call(a, "GET", "/internal/force_flush")?;
                let _ = http_call(a, "GET", "/internal/force_merge");
                // Merges run in the background: wait until the size settles.
                let mut last = 0;
                for _ in 0..60 {
                    std::thread::sleep(Duration::from_secs(2));
                    let now = dir_bytes(&p.dir.join("data")) + dir_bytes(&p.dir.join("indexdb"));
                    if now == last {
                        break;
                    }
                    last = now;
                }
                Ok(last)
            }
            Receiver::Prometheus(p, a) => {
                // A snapshot writes the head out as a block, compressed as blocks are.
                let out = super::http_request(a, "POST", "/api/v1/admin/tsdb/snapshot", "")?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let name = v["data"]["name"].as_str().context("snapshot name")?;
                Ok(dir_bytes(&p.dir.join("data/snapshots").join(name)))
            }
        }
    }
}

/// The bodies a benchmark sends, by request number; `None` when there are no more.
pub(super) trait Requests: Send + Sync {
    fn body(&self, n: usize) -> Option<Cow<'_, [u8]>>;
    /// How many items (samples, spans) request `n` holds.
    fn items(&self, n: usize) -> usize;
}

/// Each body once; items not counted.
impl Requests for Vec<Vec<u8>> {
    fn body(&self, n: usize) -> Option<Cow<'_, [u8]>> {
        self.get(n).map(|b| Cow::Borrowed(b.as_slice()))
    }

    fn items(&self, _n: usize) -> usize {
        0
    }
}

/// What [`send_all`] measured.
pub(super) struct Sent {
    pub elapsed: Duration,
    /// Acknowledgement latency, µs.
    pub latencies: Histogram<u64>,
    pub failed: u64,
    /// Items of the acknowledged requests.
    pub items: u64,
}

/// Sends every request of `requests` over `connections` kept-alive connections, each with one
/// request in flight; saturated answers are retried.
pub(super) async fn send_all(
    host: &str,
    path: &'static str,
    headers: &'static str,
    requests: Arc<dyn Requests>,
    connections: usize,
) -> Sent {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let items = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, latencies, failures, items, requests) = (
            Arc::clone(&next),
            Arc::clone(&latencies),
            Arc::clone(&failures),
            Arc::clone(&items),
            Arc::clone(&requests),
        );
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = requests.body(i) else {
                    break;
                };
                // Saturated answers are retried, as Prometheus retries them.
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let stream = match conn.take() {
                        Some(s) => s,
                        None => match tokio::net::TcpStream::connect(&host).await {
                            // Without it, a body's last segment waits for the delayed ACK
                            // (40 ms), and the client, not the server, sets the pace.
                            Ok(s) if s.set_nodelay(true).is_ok() => tokio::io::BufStream::new(s),
                            Ok(s) => tokio::io::BufStream::new(s),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    let sent = Instant::now();
                    match crate::http_post::post_body(stream, &host, path, headers, &body).await {
                        Ok((status, _, stream)) => {
                            conn = Some(stream);
                            if (200..300).contains(&status) {
                                if let Ok(mut h) = latencies.lock() {
                                    let _ = h.record(sent.elapsed().as_micros() as u64);
                                }
                                items.fetch_add(
                                    requests.items(i) as u64,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                break;
                            }
                            if (status == 429 || status >= 500) && attempts < 20 {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                            if failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                                eprintln!("{host}{path}: request {i} answered {status}");
                            }
                            break;
                        }
                        Err(_) if attempts < 20 => continue,
                        Err(_) => {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let latencies = latencies
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"));
    Sent {
        elapsed,
        latencies,
        failed: failures.load(std::sync::atomic::Ordering::Relaxed),
        items: items.load(std::sync::atomic::Ordering::Relaxed),
    }
}

pub(super) const RW_HEADERS: &str = "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n";

pub async fn run(args: MetricsArgs) -> anyhow::Result<()> {
    println!(
        "command: sightline bench metrics --targets {} --intervals {} --samples-per-request {} --connections {} --peers {} --otlp-points {}{}",
        args.targets,
        args.intervals,
        args.samples_per_request,
        args.connections,
        args.peers,
        args.otlp_points,
        if args.server_args.is_empty() { String::new() } else { format!(" --server-args '{}'", args.server_args) }
    );
    let started = Instant::now();
    let w = workload(&args);
    let compressed: u64 = w.bodies.iter().map(|b| b.len() as u64).sum();
    println!(
        "workload:         {} series ({} targets x {}), {} samples in {} requests; {:.1} MB of protobuf, {:.1} MB snappy; built in {:.1} s",
        w.series,
        args.targets,
        w.series / args.targets.max(1) as u64,
        w.samples,
        w.bodies.len(),
        w.raw_bytes as f64 / 1e6,
        compressed as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!(
        "entropy floor:    {:.3} bytes per sample (the randomness of the values; timestamps and series carry none)",
        w.entropy_bits / 8.0 / w.samples as f64
    );
    let bodies: Arc<dyn Requests> = Arc::new(w.bodies);
    for name in args
        .peers
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let receiver = Receiver::start(name, &args.server_args)?;
        let pid = receiver.pid();
        let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
        let (host, path) = receiver.write_endpoint();
        let Sent {
            elapsed,
            latencies: h,
            failed,
            ..
        } = send_all(
            &host,
            path,
            RW_HEADERS,
            Arc::clone(&bodies),
            args.connections,
        )
        .await;
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
        let rss = peak_rss_mib(pid).unwrap_or(0.0);
        let bytes = receiver.compacted_bytes()?;
        println!(
            "{:<16}  {:>9.0} samples/s acknowledged, ack p50 {:.1} ms p99 {:.1} ms, {} failed requests; {:.3} bytes per sample on disk after compaction; peak RSS {:.0} MiB; {:.2} CPU s per million samples",
            receiver.label(),
            w.samples as f64 / elapsed.as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            failed,
            bytes as f64 / w.samples as f64,
            rss,
            cpu / (w.samples as f64 / 1e6)
        );
    }
    if args.otlp_points > 0 {
        otlp(&args).await?;
    }
    Ok(())
}

/// OTLP/HTTP protobuf metrics into Sightline: gauges of 100 series per metric, 1,000 points a
/// request.
async fn otlp(args: &MetricsArgs) -> anyhow::Result<()> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric::Data, number_data_point::Value, Gauge, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    let kv = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let now = now_ms() as u64 * 1_000_000;
    let mut rng = SmallRng::seed_from_u64(9);
    let requests = args.otlp_points.div_ceil(1000);
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|r| {
            let metrics = (0..10)
                .map(|m| Metric {
                    name: format!("app.queue{m}.depth"),
                    unit: "{item}".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: (0..100)
                            .map(|p| NumberDataPoint {
                                attributes: vec![kv("queue", format!("q{p}"))],
                                time_unix_nano: now - ((r / 100) as u64) * 1_000_000_000,
                                value: Some(Value::AsDouble(f64::from(
                                    rng.random_range(0..1000u32),
                                ))),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", format!("svc{}", r % 100)),
                            kv("service.instance.id", "pod-1".into()),
                        ],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        })
        .collect();
    let points = (requests * 1000) as f64;
    let server = LocalServer::start_in(
        std::env::temp_dir().join(format!("sightline-bench-otlp-{}", std::process::id())),
        true,
        &args.server_args,
        None,
    )?;
    let Sent {
        elapsed,
        latencies: h,
        failed,
        ..
    } = send_all(
        &server.otlp_http,
        "/v1/metrics",
        "Content-Type: application/x-protobuf\r\n",
        Arc::new(bodies),
        args.connections,
    )
    .await;
    println!(
        "OTLP metrics      {:>9.0} samples/s acknowledged by Sightline (OTLP/HTTP protobuf, 1,000 points a request, {} in flight), ack p50 {:.1} ms p99 {:.1} ms, {failed} failed",
        points / elapsed.as_secs_f64(),
        args.connections,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}
