//! What the end-to-end tests share: the real `sightline` binary on ephemeral ports with a
//! temporary data directory, and the stored spans read back through the storage crate.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Float64Array,
    Int32Array, Int64Array, Int8Array, ListArray, MapArray, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use sightline_storage::arrow::array::RecordBatch;
use sightline_storage::Store;

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub grpc_addr: String,
    pub otlp_http_addr: String,
    pub http_addr: String,
    pub zipkin_addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(key)? + key.len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--otlp-grpc-addr", "127.0.0.1:0"])
            .args(["--otlp-http-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(if extra.contains(&"--lookout-addr") {
                &[][..]
            } else {
                &["--lookout-addr", "127.0.0.1:0"][..]
            })
            .args(if extra.contains(&"--zipkin-addr") {
                &[][..]
            } else {
                &["--zipkin-addr", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env("RUST_LOG", "info,sightline_collector=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sightline");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("sightline started") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            grpc_addr: field(&line, "otlp_grpc=").unwrap(),
            otlp_http_addr: field(&line, "otlp_http=").unwrap(),
            http_addr: field(&line, " http=").unwrap(),
            zipkin_addr: field(&line, "zipkin=").unwrap(),
            log,
        }
    }

    /// `GET` a path of the HTTP port, expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(&format!("http://{}{path}", self.http_addr));
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"))
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.otlp_http_addr)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/v1/metrics", self.otlp_http_addr)
    }

    /// Zipkin's span intake on its own port (9411 in production).
    pub fn zipkin_url(&self) -> String {
        format!("http://{}/api/v2/spans", self.zipkin_addr)
    }

    /// Prometheus remote write on the HTTP port.
    pub fn remote_write_url(&self) -> String {
        format!("http://{}/prometheus/api/v1/write", self.http_addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// SIGTERM and wait: the server drains and flushes.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        send_signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    status.success(),
                    "server exited with {status}: {:?}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        send_signal(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill(2)` through the `kill` command, so the tests need no unsafe code.
pub fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// An attribute value as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Json(String),
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub time: i64,
    pub name: String,
    pub attributes: BTreeMap<String, Val>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredLink {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: Option<String>,
    pub attributes: BTreeMap<String, Val>,
}

/// One stored span, read back from Arrow into plain values for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub trace_state: Option<String>,
    pub service: String,
    pub name: String,
    pub kind: i8,
    pub start: i64,
    pub duration: i64,
    pub status_code: i8,
    pub status_message: Option<String>,
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub resource: BTreeMap<String, Val>,
    pub attributes: BTreeMap<String, Val>,
    pub events: Vec<StoredEvent>,
    pub links: Vec<StoredLink>,
    pub http_method: Option<String>,
    pub http_route: Option<String>,
    pub http_status_code: Option<i32>,
    pub peer_service: Option<String>,
    pub server_address: Option<String>,
    pub db_system: Option<String>,
    pub rpc_service: Option<String>,
    pub rpc_method: Option<String>,
    pub messaging_system: Option<String>,
    pub messaging_destination: Option<String>,
    pub load_test: bool,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn dict(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let a = batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .unwrap();
    if a.is_null(row) {
        return None;
    }
    let values = a.values().as_any().downcast_ref::<StringArray>().unwrap();
    Some(values.value(a.keys().value(row) as usize).to_string())
}

fn opt_str(a: &StringArray, row: usize) -> Option<String> {
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
}

fn attributes(map: &MapArray, row: usize) -> BTreeMap<String, Val> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries
        .column(1)
        .as_any()
        .downcast_ref::<StructArray>()
        .unwrap();
    let s = values.column(0).as_string::<i32>();
    let i = values
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let d = values
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    let b = values
        .column(3)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .unwrap();
    let by = values
        .column(4)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let j = values.column(5).as_string::<i32>();
    let mut out = BTreeMap::new();
    for r in 0..entries.len() {
        let v = if !s.is_null(r) {
            Val::Str(s.value(r).into())
        } else if !i.is_null(r) {
            Val::Int(i.value(r))
        } else if !d.is_null(r) {
            Val::Double(d.value(r))
        } else if !b.is_null(r) {
            Val::Bool(b.value(r))
        } else if !by.is_null(r) {
            Val::Bytes(by.value(r).to_vec())
        } else if !j.is_null(r) {
            Val::Json(j.value(r).into())
        } else {
            Val::Empty
        };
        out.insert(keys.value(r).to_string(), v);
    }
    out
}

pub fn spans_of(batches: &[RecordBatch]) -> Vec<StoredSpan> {
    let mut out = Vec::new();
    for batch in batches {
        let trace = col::<FixedSizeBinaryArray>(batch, "trace_id");
        let span = col::<FixedSizeBinaryArray>(batch, "span_id");
        let parent = col::<FixedSizeBinaryArray>(batch, "parent_span_id");
        let trace_state = col::<StringArray>(batch, "trace_state");
        let kind = col::<Int8Array>(batch, "span_kind");
        let start = col::<TimestampNanosecondArray>(batch, "start_time");
        let duration = col::<Int64Array>(batch, "duration_nano");
        let status = col::<Int8Array>(batch, "status_code");
        let status_message = col::<StringArray>(batch, "status_message");
        let resource = col::<MapArray>(batch, "resource_attributes");
        let attrs = col::<MapArray>(batch, "attributes");
        let events = col::<ListArray>(batch, "events");
        let links = col::<ListArray>(batch, "links");
        let http_status = col::<Int32Array>(batch, "http_status_code");
        let load_test = col::<BooleanArray>(batch, "load_test");
        for row in 0..batch.num_rows() {
            let ev = events.value(row);
            let ev = ev.as_any().downcast_ref::<StructArray>().unwrap();
            let ev_time = ev
                .column(0)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap();
            let ev_name = ev.column(1).as_string::<i32>();
            let ev_attrs = ev.column(2).as_any().downcast_ref::<MapArray>().unwrap();
            let lk = links.value(row);
            let lk = lk.as_any().downcast_ref::<StructArray>().unwrap();
            let lk_trace = lk
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap();
            let lk_span = lk
                .column(1)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap();
            let lk_state = lk.column(2).as_string::<i32>();
            let lk_attrs = lk.column(3).as_any().downcast_ref::<MapArray>().unwrap();
            out.push(StoredSpan {
                trace_id: hex(trace.value(row)),
                span_id: hex(span.value(row)),
                parent_span_id: (!parent.is_null(row)).then(|| hex(parent.value(row))),
                trace_state: opt_str(trace_state, row),
                service: dict(batch, "service_name", row).unwrap(),
                name: dict(batch, "span_name", row).unwrap(),
                kind: kind.value(row),
                start: start.value(row),
                duration: duration.value(row),
                status_code: status.value(row),
                status_message: opt_str(status_message, row),
                scope_name: dict(batch, "scope_name", row),
                scope_version: dict(batch, "scope_version", row),
                resource: attributes(resource, row),
                attributes: attributes(attrs, row),
                events: (0..ev.len())
                    .map(|e| StoredEvent {
                        time: ev_time.value(e),
                        name: ev_name.value(e).to_string(),
                        attributes: attributes(ev_attrs, e),
                    })
                    .collect(),
                links: (0..lk.len())
                    .map(|l| StoredLink {
                        trace_id: hex(lk_trace.value(l)),
                        span_id: hex(lk_span.value(l)),
                        trace_state: (!lk_state.is_null(l)).then(|| lk_state.value(l).to_string()),
                        attributes: attributes(lk_attrs, l),
                    })
                    .collect(),
                http_method: dict(batch, "http_method", row),
                http_route: dict(batch, "http_route", row),
                http_status_code: (!http_status.is_null(row)).then(|| http_status.value(row)),
                peer_service: dict(batch, "peer_service", row),
                server_address: dict(batch, "server_address", row),
                db_system: dict(batch, "db_system", row),
                rpc_service: dict(batch, "rpc_service", row),
                rpc_method: dict(batch, "rpc_method", row),
                messaging_system: dict(batch, "messaging_system", row),
                messaging_destination: dict(batch, "messaging_destination", row),
                load_test: load_test.is_valid(row) && load_test.value(row),
            });
        }
    }
    out
}

/// Every span in a data directory: Parquet files plus what the WAL holds beyond them.
pub fn stored_spans(data_dir: &Path) -> Vec<StoredSpan> {
    let version = Store::load_readonly(data_dir).expect("load the data directory");
    spans_of(&version.read_all("spans").expect("read spans"))
}

/// Where the Go module proxy's copy of `module@version` is, downloaded (once, into Go's module
/// cache) with `go mod download`: test material such as Prometheus's own tests, fetched at test
/// time and never copied into this repository.
pub fn go_module_dir(module: &str, version: &str) -> PathBuf {
    let out = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .output()
        .expect("go (the Go toolchain is on the machine)");
    assert!(
        out.status.success(),
        "go mod download {module}@{version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(info["Dir"].as_str().unwrap())
}

/// A command of a Go module built from the Go module proxy, once per version: cached under
/// `~/.cache/sightline-tests/go-bin/`. `go install package@version` where it works; a module
/// whose `go.mod` has `replace` directives (Jaeger's) refuses that, and is built as a tool of a
/// scratch module instead (`go get -tool`, `go build`).
pub fn go_binary(package: &str, version: &str) -> PathBuf {
    let name = package.rsplit('/').next().unwrap();
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = home
        .join(".cache/sightline-tests/go-bin")
        .join(format!("{name}-{version}"));
    let bin = dir.join(name);
    if bin.exists() {
        return bin;
    }
    // Built aside and renamed, so an interrupted build never leaves a half-written binary.
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let installed = Command::new("go")
        .args(["install", &format!("{package}@{version}")])
        .env("GOBIN", &building)
        .status()
        .expect("go (the Go toolchain is on the machine)")
        .success();
    if !installed {
        let module = building.with_extension("module");
        std::fs::create_dir_all(&module).unwrap();
        let go = |args: &[&str]| {
            let status = Command::new("go")
                .args(args)
                .current_dir(&module)
                .status()
                .expect("go");
            assert!(status.success(), "go {args:?} for {package}@{version}");
        };
        go(&["mod", "init", "sightline.test/tool"]);
        go(&["get", "-tool", &format!("{package}@{version}")]);
        let out = building.join(name);
        go(&["build", "-o", out.to_str().unwrap(), package]);
        let _ = std::fs::remove_dir_all(&module);
    }
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    if std::fs::rename(&building, &dir).is_err() {
        // Another test built it meanwhile.
        let _ = std::fs::remove_dir_all(&building);
    }
    bin
}

/// A jar from Maven Central, resolved by Maven into its local repository (`~/.m2`, which keeps
/// it by version): test programs and servers such as Zipkin's, fetched at test time.
pub fn maven_jar(group: &str, artifact: &str, version: &str, classifier: Option<&str>) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let suffix = classifier.map(|c| format!("-{c}")).unwrap_or_default();
    let jar = home
        .join(".m2/repository")
        .join(group.replace('.', "/"))
        .join(artifact)
        .join(version)
        .join(format!("{artifact}-{version}{suffix}.jar"));
    if jar.exists() {
        return jar;
    }
    let coordinates = match classifier {
        Some(c) => format!("{group}:{artifact}:{version}:jar:{c}"),
        None => format!("{group}:{artifact}:{version}"),
    };
    let status = Command::new("mvn")
        .args(["-q", "-B", "dependency:get", "-Dtransitive=false"])
        .arg(format!("-Dartifact={coordinates}"))
        .status()
        .expect("mvn (Java 17 and Maven are on the machine)");
    assert!(status.success(), "maven could not fetch {coordinates}");
    assert!(jar.exists(), "{} missing after fetching it", jar.display());
    jar
}

/// A Java test program under `tests/{project}/` (a `pom.xml` naming the real client and
/// `src/main/java/{main}.java`): Maven resolves the client's classpath, javac compiles the
/// program into `out`. Returns the classpath to run it with.
pub fn java_program(project: &str, main: &str, out: &Path) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(project);
    let cp_file = out.join("classpath.txt");
    let status = Command::new("mvn")
        .args(["-q", "-B", "dependency:build-classpath"])
        .arg(format!("-Dmdep.outputFile={}", cp_file.display()))
        .current_dir(&dir)
        .status()
        .expect("mvn (Java 17 and Maven are on the machine)");
    assert!(
        status.success(),
        "resolving {project}'s client with Maven failed"
    );
    let classpath = std::fs::read_to_string(&cp_file)
        .unwrap()
        .trim()
        .to_string();
    let classes = out.join("classes");
    let status = Command::new("javac")
        .args(["--release", "17", "-cp", &classpath, "-d"])
        .arg(&classes)
        .arg(dir.join(format!("src/main/java/{main}.java")))
        .status()
        .expect("javac");
    assert!(status.success(), "compiling {main} failed");
    format!("{}:{classpath}", classes.display())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus — Debian's `prometheus`, or one [`go_binary`] built — on `127.0.0.1:port`
/// with `config` (YAML) and `flags`, its data under `dir`, once it says it is ready.
pub fn start_prometheus(
    binary: &Path,
    dir: &Path,
    port: u16,
    config: &str,
    flags: &[&str],
) -> Running {
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prom-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} (scripts/test.sh installs Debian's package): {e}",
                binary.display()
            )
        });
    let running = Running(child);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), "prometheus");
    running
}

/// A query-string value form-encoded.
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Waits (at most a minute) until `url` answers with success.
pub fn wait_ready(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = reqwest::blocking::get(url) {
            if resp.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not come up at {url}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn now_ms() -> i64 {
    (now_nanos() / 1_000_000) as i64
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// HTTP/1.1 POST with a blocking client; returns status, headers and body.
pub fn post(
    url: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    for (k, v) in extra_headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("send request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().unwrap().to_vec())
}

pub fn get(url: &str) -> (u16, String) {
    let resp = reqwest::blocking::get(url).expect("get");
    (resp.status().as_u16(), resp.text().unwrap())
}

/// One unary OTLP/gRPC export of pre-encoded bytes with tonic, optionally gzip-compressed.
pub fn grpc_export(url: &str, body: Vec<u8>, gzip: bool) -> Result<Vec<u8>, tonic::Status> {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Clone)]
    struct Raw;
    struct RawEnc;
    struct RawDec;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEnc;
        type Decoder = RawDec;
        fn encoder(&mut self) -> RawEnc {
            RawEnc
        }
        fn decoder(&mut self) -> RawDec {
            RawDec
        }
    }
    impl Encoder for RawEnc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for RawDec {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        if gzip {
            grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        grpc.unary(tonic::Request::new(body), path, Raw)
            .await
            .map(|r| r.into_inner())
    })
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Builders for OTLP requests, with the official generated types.
pub mod otlp {
    pub use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    #[allow(unused_imports)]
    pub use opentelemetry_proto::tonic::trace::v1::{
        span, ResourceSpans, ScopeSpans, Span, Status,
    };
    use prost::Message;

    pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    pub fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    pub fn i(v: i64) -> any_value::Value {
        any_value::Value::IntValue(v)
    }

    /// A valid span: `n` picks distinct ids, times are now.
    pub fn span(n: u8, name: &str) -> Span {
        let now = super::now_nanos();
        Span {
            trace_id: vec![n.wrapping_add(1); 16],
            span_id: vec![n.wrapping_add(1); 8],
            name: name.into(),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            ..Default::default()
        }
    }

    pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tests".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    pub fn encode(r: &ExportTraceServiceRequest) -> Vec<u8> {
        r.encode_to_vec()
    }

    pub fn decode_response(b: &[u8]) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse::decode(b).expect("decode ExportTraceServiceResponse")
    }
}

/// A stored sample with its series' labels (the metric name as `__name__`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub labels: BTreeMap<String, String>,
    pub ts: i64,
    pub value: f64,
    pub start: Option<i64>,
}

impl StoredSample {
    /// `name{k="v",...}`, the way Prometheus prints a series.
    pub fn series(&self) -> String {
        series_text(&self.labels)
    }
}

pub fn series_text(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// A stored native histogram with its series' labels.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHistogram {
    pub labels: BTreeMap<String, String>,
    pub ts: i64,
    pub count: f64,
    pub sum: f64,
    pub schema: i32,
    pub zero_count: f64,
    pub positive_spans: Vec<(i32, u32)>,
    pub positive_buckets: Vec<f64>,
    pub negative_spans: Vec<(i32, u32)>,
    pub negative_buckets: Vec<f64>,
    pub reset_hint: i8,
}

/// (series labels, exemplar labels, value, timestamp).
pub type StoredExemplar = (BTreeMap<String, String>, BTreeMap<String, String>, f64, i64);

/// What a data directory holds of metrics, series labels joined in.
#[derive(Debug, Default)]
pub struct StoredMetrics {
    pub samples: Vec<StoredSample>,
    pub histograms: Vec<StoredHistogram>,
    pub exemplars: Vec<StoredExemplar>,
    /// (family, type, unit, help).
    pub metadata: Vec<(String, String, String, String)>,
}

impl StoredMetrics {
    /// Samples of the series with these labels (any others allowed), in time order.
    pub fn of(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&StoredSample> {
        let mut out: Vec<&StoredSample> = self
            .samples
            .iter()
            .filter(|s| s.labels.get("__name__").map(String::as_str) == Some(name))
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        out.sort_by_key(|s| s.ts);
        out
    }
}

fn string_list(a: &dyn Array) -> Vec<(String, String)> {
    let s = a.as_struct();
    let names = s.column(0).as_string::<i32>();
    let values = s.column(1).as_string::<i32>();
    (0..s.len())
        .map(|i| (names.value(i).to_string(), values.value(i).to_string()))
        .collect()
}

fn dict_value(a: &dyn Array, i: usize) -> String {
    let d = a.as_dictionary::<Int32Type>();
    d.values()
        .as_string::<i32>()
        .value(d.keys().value(i) as usize)
        .to_string()
}

fn spans_of_list(l: &ListArray, i: usize) -> Vec<(i32, u32)> {
    let v = l.value(i);
    let s = v.as_struct();
    let o = s.column(0).as_primitive::<arrow::datatypes::Int32Type>();
    let n = s.column(1).as_primitive::<arrow::datatypes::UInt32Type>();
    (0..s.len()).map(|j| (o.value(j), n.value(j))).collect()
}

fn floats_of_list(l: &ListArray, i: usize) -> Vec<f64> {
    l.value(i)
        .as_primitive::<arrow::datatypes::Float64Type>()
        .values()
        .to_vec()
}

/// A column of primitives by name, as the table's schema says it is.
fn primitive<T: arrow::datatypes::ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
) -> arrow::array::PrimitiveArray<T> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<T>()
        .clone()
}

/// Every metric a data directory holds: files plus what the WAL holds beyond them.
pub fn stored_metrics(data_dir: &Path) -> StoredMetrics {
    use arrow::datatypes::{TimestampMillisecondType, UInt64Type};
    let version = Store::load_readonly(data_dir).expect("load the data directory");
    let read = |t: &str| version.read_all(t).expect("read a metric table");
    let mut series: std::collections::HashMap<u64, BTreeMap<String, String>> = Default::default();
    for b in read("metric_series") {
        let ids = primitive::<UInt64Type>(&b, "series_id");
        let metric = b.column_by_name("metric").unwrap();
        let labels = b.column_by_name("labels").unwrap().as_list::<i32>();
        for i in 0..b.num_rows() {
            let mut l: BTreeMap<String, String> =
                string_list(labels.value(i).as_ref()).into_iter().collect();
            l.insert("__name__".into(), dict_value(metric.as_ref(), i));
            series.insert(ids.value(i), l);
        }
    }
    let labels_of = |id: u64| {
        series
            .get(&id)
            .cloned()
            .expect("every sample's series is stored")
    };
    let mut out = StoredMetrics::default();
    for b in read("metric_samples") {
        let ids = primitive::<UInt64Type>(&b, "series_id");
        let ts = primitive::<TimestampMillisecondType>(&b, "timestamp");
        let vals = primitive::<arrow::datatypes::Float64Type>(&b, "value");
        let starts = primitive::<TimestampMillisecondType>(&b, "start_timestamp");
        for i in 0..b.num_rows() {
            out.samples.push(StoredSample {
                labels: labels_of(ids.value(i)),
                ts: ts.value(i),
                value: vals.value(i),
                start: starts.is_valid(i).then(|| starts.value(i)),
            });
        }
    }
    for b in read("metric_histograms") {
        let ids = primitive::<UInt64Type>(&b, "series_id");
        let ts = primitive::<TimestampMillisecondType>(&b, "timestamp");
        let f = |n: &str| primitive::<arrow::datatypes::Float64Type>(&b, n);
        let (count, sum, zero) = (f("count"), f("sum"), f("zero_count"));
        let schema = primitive::<arrow::datatypes::Int32Type>(&b, "schema");
        let hint = primitive::<arrow::datatypes::Int8Type>(&b, "reset_hint");
        let list = |n: &str| b.column_by_name(n).unwrap().as_list::<i32>().clone();
        let (ps, pb, ns, nb) = (
            list("positive_spans"),
            list("positive_buckets"),
            list("negative_spans"),
            list("negative_buckets"),
        );
        for i in 0..b.num_rows() {
            out.histograms.push(StoredHistogram {
                labels: labels_of(ids.value(i)),
                ts: ts.value(i),
                count: count.value(i),
                sum: sum.value(i),
                schema: schema.value(i),
                zero_count: zero.value(i),
                positive_spans: spans_of_list(&ps, i),
                positive_buckets: floats_of_list(&pb, i),
                negative_spans: spans_of_list(&ns, i),
                negative_buckets: floats_of_list(&nb, i),
                reset_hint: hint.value(i),
            });
        }
    }
    for b in read("metric_exemplars") {
        let ids = primitive::<UInt64Type>(&b, "series_id");
        let ts = primitive::<TimestampMillisecondType>(&b, "timestamp");
        let vals = primitive::<arrow::datatypes::Float64Type>(&b, "value");
        let labels = b.column_by_name("labels").unwrap().as_list::<i32>();
        for i in 0..b.num_rows() {
            out.exemplars.push((
                labels_of(ids.value(i)),
                string_list(labels.value(i).as_ref()).into_iter().collect(),
                vals.value(i),
                ts.value(i),
            ));
        }
    }
    for b in read("metric_metadata") {
        let metric = b.column_by_name("metric").unwrap();
        let kind = b.column_by_name("type").unwrap();
        let unit = b.column_by_name("unit").unwrap().as_string::<i32>();
        let help = b.column_by_name("help").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.metadata.push((
                dict_value(metric.as_ref(), i),
                dict_value(kind.as_ref(), i),
                unit.value(i).to_string(),
                help.value(i).to_string(),
            ));
        }
    }
    out
}
