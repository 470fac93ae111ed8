//! `sightline import sofatracer`: SOFATracer's digest logs (what it writes when its Zipkin
//! reporter is off, the default) into a running Sightline, as the spans the reporter would have
//! sent — the shared client/server id split, parents from the dotted ids, local times at the
//! writer's offset, load-test baggage — and `--follow` across a rotation.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, Server, StoredSpan};

const TRACE: &str = "0a0fe9271796236616942100116981";
const SHADOW: &str = "0a0fe9271796236616942100226981";

/// A digest line with the fields SOFATracer's encoders write: the common slot (end time, app,
/// ids, kind, result code, thread, cost), the plugin's (`extra`), then the baggage.
struct Digest<'a> {
    trace: &'a str,
    span: &'a str,
    app: &'a str,
    kind: &'a str,
    end: &'a str,
    ms: u64,
    extra: &'a str,
    biz: &'a str,
}

impl Digest<'_> {
    fn line(&self) -> String {
        let Digest {
            trace,
            span,
            app,
            kind,
            end,
            ms,
            extra,
            biz,
        } = self;
        format!(
            r#"{{"time":"{end}","local.app":"{app}","traceId":"{trace}","spanId":"{span}","span.kind":"{kind}","result.code":"200","current.thread.name":"http-nio-8080-exec-1","time.cost.milliseconds":"{ms}ms",{extra}"sys.baggage":"","biz.baggage":"{biz}"}}"#
        )
    }
}

fn import(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["import", "sofatracer", "--endpoint"])
        .arg(format!("http://{}", server.zipkin_addr))
        .args(args)
        .output()
        .expect("run sightline import")
}

/// Runs an import that must succeed: what it printed to stdout and to stderr.
fn import_ok(server: &Server, args: &[&str]) -> (String, String) {
    let out = import(server, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

fn wait_spans(server: &Server, trace: &str, n: usize) -> Vec<StoredSpan> {
    let id = format!("{trace:0>32}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<StoredSpan> = common::stored_spans(&server.data_dir)
            .into_iter()
            .filter(|s| s.trace_id == id)
            .collect();
        if spans.len() >= n || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn one<'a>(spans: &'a [StoredSpan], service: &str, kind: i8) -> &'a StoredSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "{service} {kind} in {spans:#?}");
    found[0]
}

#[test]
fn digest_logs_import_as_the_reported_spans_would_be_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mvc = r#""request.url":"http://order.local/order?id=7","method":"GET","req.size.bytes":0,"resp.size.bytes":12,"error":"","#;
    let client = r#""request.url":"http://stock.local/stock","method":"GET","req.size.bytes":0,"resp.size.bytes":3,"remote.app":"stock-app","error":"","#;
    let stock = r#""request.url":"http://stock.local/stock","method":"GET","req.size.bytes":0,"resp.size.bytes":3,"error":"","#;
    let spring_mvc = dir.path().join("spring-mvc-digest.log");
    let httpclient = dir.path().join("httpclient-digest.log");
    // Children finish, and are logged, first. Times are local at +08:00.
    std::fs::write(
        &spring_mvc,
        [
            Digest {
                trace: TRACE,
                span: "0.1",
                app: "stock-app",
                kind: "server",
                end: "2026-12-02 18:30:00.200",
                ms: 150,
                extra: stock,
                biz: "",
            }
            .line(),
            Digest {
                trace: TRACE,
                span: "0",
                app: "order-app",
                kind: "server",
                end: "2026-12-02 18:30:00.250",
                ms: 250,
                extra: mvc,
                biz: "tenant=acme",
            }
            .line(),
            "{\"this is\": not json".to_string(),
            Digest {
                trace: SHADOW,
                span: "0",
                app: "order-app",
                kind: "server",
                end: "2026-12-02 18:31:00.100",
                ms: 100,
                extra: mvc,
                biz: "mark=T",
            }
            .line(),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    std::fs::write(
        &httpclient,
        Digest {
            trace: TRACE,
            span: "0.1",
            app: "order-app",
            kind: "client",
            end: "2026-12-02 18:30:00.220",
            ms: 200,
            extra: client,
            biz: "tenant=acme",
        }
        .line()
            + "\n",
    )
    .unwrap();
    let (stdout, stderr) = import_ok(
        &server,
        &[
            "--utc-offset",
            "+08:00",
            spring_mvc.to_str().unwrap(),
            httpclient.to_str().unwrap(),
        ],
    );
    assert!(
        stdout.contains("imported 4 spans and 0 stat lines from 2 file(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 line(s) skipped"), "{stdout}");
    assert!(
        stderr.contains("spring-mvc-digest.log:3: not a JSON object"),
        "{stderr}"
    );

    let spans = wait_spans(&server, TRACE, 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let root = one(&spans, "order-app", 2);
    let call = one(&spans, "order-app", 3);
    let callee = one(&spans, "stock-app", 2);
    // FNV-1a 64 of the dotted ids, as the reporter sends them; the callee's shared id split off
    // and parented on the client.
    assert_eq!(root.span_id, "af63ad4c86019caf");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(call.span_id, "4e18dd181d0a2066");
    assert_eq!(call.parent_span_id.as_deref(), Some("af63ad4c86019caf"));
    assert_ne!(callee.span_id, call.span_id);
    assert_eq!(callee.parent_span_id.as_deref(), Some("4e18dd181d0a2066"));
    assert_eq!(root.name, "GET /order");
    // 18:30:00.250 at +08:00, less the 250 ms it took.
    assert_eq!(root.start, 1_796_207_400_000_000_000);
    assert_eq!(root.duration, 250_000_000);
    assert_eq!(root.attributes["tenant"], common::Val::Str("acme".into()));
    assert_eq!(
        root.http_method.as_deref(),
        None,
        "SOFATracer's tag is `method`"
    );
    assert!(spans.iter().all(|s| !s.load_test));
    let shadow = wait_spans(&server, SHADOW, 1);
    assert_eq!(shadow.len(), 1);
    assert!(shadow[0].load_test, "mark=T baggage");

    // Errors: missing files, a bad offset; nothing half-done.
    for (args, says) in [
        (vec!["/nonexistent/x-digest.log"], "no such file"),
        (vec!["/nonexistent/spring-mvc-stat.log"], "no such file"),
        (vec!["--utc-offset", "8", "x-digest.log"], "--utc-offset"),
    ] {
        let out = import(&server, &args);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    server.stop();
}

#[test]
fn follow_reads_appended_lines_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let log = dir.path().join("spring-mvc-digest.log");
    let extra = r#""request.url":"http://a.local/ping","method":"GET","error":"","#;
    std::fs::write(&log, "").unwrap();
    let _follower = Running(
        Command::new(env!("CARGO_BIN_EXE_sightline"))
            .args(["import", "sofatracer", "--follow", "--endpoint"])
            .arg(format!("http://{}/zipkin", server.http_addr))
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let now = common::now_ms() / 1000;
    let end = |s: i64| sofatracer_time(now + s);
    let trace = |n: u32| format!("0a0fe92717962366169421{n:08}");
    // The root span of trace `n`, ending `s` seconds from now.
    let ping = |n: u32, s: i64| {
        Digest {
            trace: &trace(n),
            span: "0",
            app: "ping-app",
            kind: "server",
            end: &end(s),
            ms: 5,
            extra,
            biz: "",
        }
        .line()
    };
    // Appended in two writes, the first ending mid-line.
    let first = ping(1, 0);
    let (head, tail) = first.split_at(40);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(head.as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    f.write_all(format!("{tail}\n").as_bytes()).unwrap();
    drop(f);
    assert_eq!(wait_spans(&server, &trace(1), 1).len(), 1);
    // SOFATracer's daily rotation: the log is renamed and a new one started.
    std::fs::rename(&log, dir.path().join("spring-mvc-digest.log.2026-12-01")).unwrap();
    std::fs::write(&log, ping(2, 1) + "\n").unwrap();
    assert_eq!(
        wait_spans(&server, &trace(2), 1).len(),
        1,
        "after the rotation"
    );
    server.stop();
}

/// A unix time as SOFATracer writes it in UTC, the default offset.
fn sofatracer_time(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.000",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A stat line the intake would refuse is skipped and named, as a bad digest line is, and the
/// lines around it are counted: one bad line does not lose the request it would have been in.
#[test]
fn a_bad_stat_line_is_skipped_and_the_rest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let log = dir.path().join("spring-mvc-stat.log");
    let time = sofatracer_time(common::now_ms() / 1000 - 120);
    let line = |count: u32| {
        format!(
            r#"{{"time":"{time}","stat.key":{{"local.app":"order-app","request.url":"http://order.local/order","method":"GET"}},"count":{count},"total.cost.milliseconds":{},"success":"Y","load.test":"F"}}"#,
            count * 10
        )
    };
    let lines = [
        line(12),
        r#"{"time":5}"#.to_string(),
        "not json".into(),
        line(3),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let (stdout, stderr) = import_ok(&server, &["--stat-interval", "60", log.to_str().unwrap()]);
    assert!(
        stdout.contains("imported 0 spans and 2 stat lines from 1 file(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("2 line(s) skipped"), "{stdout}");
    for n in [2, 3] {
        assert!(
            stderr.contains(&format!("spring-mvc-stat.log:{n}:")),
            "{stderr}"
        );
    }
    let rows = wait_operations(&server, false, 15);
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 15, "{rows:?}");
    server.stop();
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The operations of order-app over the last hour, by name: (calls, errors, mean ms, p99 ms).
fn operations(server: &Server, load_test: bool) -> Vec<(String, u64, u64, f64, Option<f64>)> {
    let end = common::now_ms() / 1000 + 120;
    let top = server.get_json(&format!(
        "/api/v1/top?service=order-app&by=rate&start={}&end={end}&load_test={load_test}",
        end - 3600
    ));
    let mut rows: Vec<_> = top["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["operation"].as_str().unwrap().to_string(),
                o["calls"].as_u64().unwrap(),
                o["errors"].as_u64().unwrap(),
                o["mean_ms"].as_f64().unwrap(),
                o["p99_ms"].as_f64(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Waits until order-app's operations count `calls` calls.
fn wait_operations(
    server: &Server,
    load_test: bool,
    calls: u64,
) -> Vec<(String, u64, u64, f64, Option<f64>)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = operations(server, load_test);
        if rows.iter().map(|r| r.1).sum::<u64>() >= calls || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The real SOFATracer's Spring MVC plugin writes digest and stat logs of the same 40 requests;
/// the stat logs alone give the RED rows the digest logs give — calls, errors and mean latency
/// per operation, load-test traffic apart — but no percentiles; given both, the stat logs are
/// skipped rather than counted twice.
#[test]
fn stat_logs_count_the_calls_their_digest_logs_hold() {
    let dir = tempfile::tempdir().unwrap();
    let classpath = common::java_program("sofatracer", "SofaTracerLogs", dir.path());
    let logs = dir.path().join("logs");
    let out = Command::new("java")
        .arg("-Duser.timezone=UTC")
        .arg(format!("-Dlogging.path={}", logs.display()))
        .args(["-cp", &classpath, "SofaTracerLogs", "40"])
        .output()
        .expect("java");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done 40"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = |name: &str| logs.join("tracelog").join(name);
    let (stat, shadow_stat) = (
        log("spring-mvc-stat.log"),
        log("shadow/spring-mvc-stat.log"),
    );
    let (digest, shadow_digest) = (
        log("spring-mvc-digest.log"),
        log("shadow/spring-mvc-digest.log"),
    );
    let from_stats = Server::start(&dir.path().join("a"), &[]);
    let (stdout, _) = import_ok(
        &from_stats,
        &[
            "--stat-interval",
            "1",
            stat.to_str().unwrap(),
            shadow_stat.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("imported 0 spans and"), "{stdout}");
    let from_digests = Server::start(&dir.path().join("b"), &[]);
    let (stdout, _) = import_ok(
        &from_digests,
        &[digest.to_str().unwrap(), shadow_digest.to_str().unwrap()],
    );
    assert!(
        stdout.contains("imported 40 spans and 0 stat lines"),
        "{stdout}"
    );

    // Requests 9, 19, 29, 39 are load tests; 6, 13, 20, 27, 34 answered 500; every fourth is a POST.
    for (load_test, calls) in [(false, 36), (true, 4)] {
        let spans = wait_operations(&from_digests, load_test, calls);
        let stats = wait_operations(&from_stats, load_test, calls);
        assert_eq!(spans.iter().map(|r| r.1).sum::<u64>(), calls, "{spans:?}");
        assert_eq!(stats.len(), spans.len(), "{stats:?} vs {spans:?}");
        for (s, d) in stats.iter().zip(&spans) {
            assert_eq!((&s.0, s.1, s.2), (&d.0, d.1, d.2), "load_test={load_test}");
            assert!((s.3 - d.3).abs() < 1e-9, "mean {} vs {}", s.3, d.3);
            assert!(
                d.4.is_some() && s.4.is_none(),
                "percentiles only from spans"
            );
        }
        if !load_test {
            let names: Vec<_> = spans.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(names, ["GET /order", "POST /order"]);
            assert_eq!(spans.iter().map(|r| r.2).sum::<u64>(), 5);
        }
    }

    // Both kinds of the same log: the stat lines are not counted again.
    let both = Server::start(&dir.path().join("c"), &[]);
    let out = import(
        &both,
        &[
            digest.to_str().unwrap(),
            stat.to_str().unwrap(),
            shadow_digest.to_str().unwrap(),
            shadow_stat.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("spring-mvc-stat.log: skipped, the digest log of the same calls counts them"),
        "{stderr}"
    );
    assert_eq!(
        wait_operations(&both, false, 36),
        wait_operations(&from_digests, false, 36)
    );
    for s in [from_stats, from_digests, both] {
        s.stop();
    }
}
