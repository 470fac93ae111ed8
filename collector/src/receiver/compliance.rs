//! The receiver compliance suite: one set of hostile requests — garbage, truncated, oversized,
//! compression bombs, unsupported content types and encodings, an empty body, a saturated
//! store — run in-process against every receiver's router, over a [`MemorySink`]. Each protocol
//! says how a request of it is made and how its answers read; the suite says what every answer
//! must be, and that nothing refused reaches the sink.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use sightline_storage::metrics::{tables, MetricsConfig};
use sightline_storage::rollup::SPAN_STATS_TABLE;
use sightline_storage::span_table::SPANS_TABLE;
use sightline_storage::{Ingest, MemoryBudget, StorageError, WriteReport};
use tower::ServiceExt;

use crate::compression::Encoding;
use crate::receiver::Receiving;
use crate::sink::{Sink, WriteFuture};

/// A sink that keeps writes in memory; it refuses them when its budget is full (a saturated
/// store).
pub struct MemorySink {
    budget: Arc<MemoryBudget>,
    metrics: MetricsConfig,
    pub writes: Mutex<Vec<(String, Ingest)>>,
}

impl MemorySink {
    pub fn new(budget_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            budget: MemoryBudget::new(budget_bytes),
            metrics: MetricsConfig::default(),
            writes: Mutex::new(Vec::new()),
        })
    }

    /// Rows written to a table so far.
    pub fn rows(&self, table: &str) -> usize {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, ingest)| match ingest {
                Ingest::Spans(b) if table == SPANS_TABLE => b.num_rows(),
                Ingest::SpanStats(b) if table == SPAN_STATS_TABLE => b.num_rows(),
                Ingest::Metrics(m) if table == tables::SAMPLES_TABLE => m.samples(),
                Ingest::Metrics(m) if table == tables::HISTOGRAMS_TABLE => m.histograms(),
                _ => 0,
            })
            .sum()
    }
}

impl Sink for MemorySink {
    fn submit(
        &self,
        tenant: &str,
        ingest: Ingest,
    ) -> Result<(WriteReport, WriteFuture), StorageError> {
        let bytes: usize = match &ingest {
            Ingest::Spans(b) | Ingest::SpanStats(b) => b.get_array_memory_size(),
            Ingest::Metrics(m) => m.samples() * 24 + m.histograms() * 200,
        };
        // A write takes room in the budget like the store's; a full budget refuses it.
        let _room = self
            .budget
            .try_reserve(bytes)
            .ok_or(StorageError::Saturated("memory budget"))?;
        let report = match &ingest {
            Ingest::Metrics(m) => m.report().clone(),
            Ingest::Spans(_) | Ingest::SpanStats(_) => WriteReport::default(),
        };
        self.writes
            .lock()
            .unwrap()
            .push((tenant.to_string(), ingest));
        Ok((report, Box::pin(async { Ok(()) })))
    }

    fn memory(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn metrics_config(&self) -> &MetricsConfig {
        &self.metrics
    }
}

/// How a protocol's answer reads, in the suite's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Bad data: the client must not retry.
    Rejected,
    TooLarge,
    Unsupported,
    /// Saturated: the client should retry (and was told when, if the protocol can say).
    Retry,
}

impl Outcome {
    /// What an HTTP status means for a protocol that answers in statuses alone.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Stored,
            413 => Outcome::TooLarge,
            415 => Outcome::Unsupported,
            429 | 503 | 555 => Outcome::Retry,
            _ => Outcome::Rejected,
        }
    }
}

/// One receiver, as the suite drives it.
pub trait Subject: Send + Sync {
    fn name(&self) -> &'static str;
    fn router(&self, receiving: Arc<Receiving>) -> Router;
    /// A request with `body`, sent as the protocol sends it, with `encoding` as its
    /// content-encoding (already applied to `body`) and `content_type` overriding the usual.
    fn request(
        &self,
        body: Vec<u8>,
        encoding: Encoding,
        content_type: Option<&str>,
    ) -> Request<Body>;
    /// A valid body holding `rows` rows of `table()`, unencoded.
    fn good_body(&self, rows: usize) -> Vec<u8>;
    /// The table its rows land in.
    fn table(&self) -> &'static str;
    /// Encodings the protocol takes besides none.
    fn encodings(&self) -> &'static [Encoding];
    /// The answer's outcome and its message (which must name the problem).
    fn read(&self, status: u16, headers: &axum::http::HeaderMap, body: &[u8]) -> (Outcome, String);
    /// What an empty body is: stored (nothing) or rejected.
    fn empty_body(&self) -> Outcome {
        Outcome::Stored
    }
    /// Whether a body cut short can be told from a whole one. The text exposition format cannot
    /// (lines, no length or end marker; the Pushgateway takes such bodies too): for it a cut body
    /// may store its complete lines, and nothing more.
    fn framed(&self) -> bool {
        true
    }
}

/// A POST as the HTTP protocols send one: its content type, a body of `len` bytes, and
/// `encoding` as its content-encoding unless none. The caller adds any headers of its own and
/// the body.
pub fn http_post(
    path: &str,
    content_type: &str,
    len: usize,
    encoding: Encoding,
) -> axum::http::request::Builder {
    let r = Request::post(path)
        .header("content-type", content_type)
        .header("content-length", len);
    match encoding {
        Encoding::Identity => r,
        e => r.header("content-encoding", e.name()),
    }
}

fn encode(body: &[u8], encoding: Encoding) -> Vec<u8> {
    use std::io::Write as _;
    match encoding {
        Encoding::Identity => body.to_vec(),
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Encoding::Snappy => snap::raw::Encoder::new().compress_vec(body).unwrap(),
    }
}

async fn send(
    subject: &dyn Subject,
    receiving: &Arc<Receiving>,
    request: Request<Body>,
) -> (Outcome, String) {
    let response: Response<Body> = subject
        .router(Arc::clone(receiving))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let (outcome, message) = subject.read(status, &headers, &body);
    if outcome == Outcome::Retry && status != 200 {
        assert!(
            headers.contains_key("retry-after")
                || headers.contains_key("wait-minutes")
                || headers.contains_key("grpc-status-details-bin"),
            "{}: a refusal to retry says when: {headers:?}",
            subject.name()
        );
    }
    (outcome, message)
}

/// Runs every case against `subject` and checks that only good requests reached the sink.
pub async fn run(subject: &dyn Subject) {
    let name = subject.name();
    let sink = MemorySink::new(1 << 30);
    let receiving = Arc::new(Receiving {
        sink: sink.clone(),
        max_request_bytes: 1 << 20,
        admission_wait: std::time::Duration::from_millis(200),
    });
    let good = |rows| subject.request(subject.good_body(rows), Encoding::Identity, None);
    let expect = |got: (Outcome, String), want: Outcome, mentions: &[&str], case: &str| {
        assert_eq!(got.0, want, "{name}, {case}: {}", got.1);
        if want != Outcome::Stored {
            let lower = got.1.to_lowercase();
            assert!(
                mentions.iter().any(|m| lower.contains(m)),
                "{name}, {case}: message {:?} names none of {mentions:?}",
                got.1
            );
        }
    };

    let before = send(subject, &receiving, good(3)).await;
    expect(before, Outcome::Stored, &[], "a good request");
    assert_eq!(
        sink.rows(subject.table()),
        3,
        "{name}: the good rows are stored"
    );

    let garbage = b"\xff\xff\xff\xff\x0fgarbage{[".to_vec();
    let got = send(
        subject,
        &receiving,
        subject.request(garbage, Encoding::Identity, None),
    )
    .await;
    expect(
        got,
        Outcome::Rejected,
        &["invalid", "truncated", "expected", "parse"],
        "garbage",
    );

    let whole = subject.good_body(5);
    let cut = whole[..whole.len() / 2].to_vec();
    let complete_lines = cut.iter().filter(|&&b| b == b'\n').count();
    let rows_before_cut = sink.rows(subject.table());
    let got = send(
        subject,
        &receiving,
        subject.request(cut, Encoding::Identity, None),
    )
    .await;
    let stored_of_cut = sink.rows(subject.table()) - rows_before_cut;
    if subject.framed() || got.0 != Outcome::Stored {
        expect(
            got,
            Outcome::Rejected,
            &[
                "truncated",
                "invalid",
                "eof",
                "unexpected",
                "parse",
                "expected",
                "not closed",
                "no number",
            ],
            "truncated",
        );
    }
    let most_of_cut = if subject.framed() { 0 } else { complete_lines };
    assert!(
        stored_of_cut <= most_of_cut,
        "{name}: a cut body stored {stored_of_cut} rows, more than its {most_of_cut} whole ones"
    );

    let too_big = vec![b'x'; (1 << 20) + 1];
    let got = send(
        subject,
        &receiving,
        subject.request(too_big, Encoding::Identity, None),
    )
    .await;
    expect(got, Outcome::TooLarge, &["exceeds"], "oversized");

    for &encoding in subject.encodings() {
        let bomb = encode(&vec![0u8; 8 << 20], encoding);
        assert!(bomb.len() < 1 << 20);
        let got = send(subject, &receiving, subject.request(bomb, encoding, None)).await;
        expect(
            got,
            Outcome::TooLarge,
            &["after decompression"],
            &format!("{encoding:?} bomb"),
        );

        let got = send(
            subject,
            &receiving,
            subject.request(b"\x05\x00not compressed at all".to_vec(), encoding, None),
        )
        .await;
        expect(
            got,
            Outcome::Rejected,
            &[encoding.name()],
            &format!("bad {encoding:?}"),
        );

        let body = encode(&subject.good_body(2), encoding);
        let got = send(subject, &receiving, subject.request(body, encoding, None)).await;
        expect(got, Outcome::Stored, &[], &format!("good {encoding:?}"));
    }
    let unsupported = [Encoding::Gzip, Encoding::Snappy]
        .into_iter()
        .find(|e| !subject.encodings().contains(e));
    if let Some(encoding) = unsupported {
        let body = encode(&subject.good_body(2), encoding);
        let got = send(subject, &receiving, subject.request(body, encoding, None)).await;
        expect(
            got,
            Outcome::Unsupported,
            &["encoding"],
            "unsupported encoding",
        );
    }

    let got = send(
        subject,
        &receiving,
        subject.request(subject.good_body(2), Encoding::Identity, Some("image/png")),
    )
    .await;
    expect(
        got,
        Outcome::Unsupported,
        &["content type", "content-type"],
        "wrong content type",
    );

    let got = send(
        subject,
        &receiving,
        subject.request(Vec::new(), Encoding::Identity, None),
    )
    .await;
    expect(
        got,
        subject.empty_body(),
        &["empty", "invalid", "no "],
        "empty body",
    );

    // A saturated store: every byte of the budget taken.
    let hog = sink
        .memory()
        .try_reserve(sink.memory().limit() - sink.memory().used());
    let got = send(subject, &receiving, good(4)).await;
    expect(
        got,
        Outcome::Retry,
        &["saturated", "retry", "memory"],
        "saturated",
    );
    drop(hog);

    let after = send(subject, &receiving, good(1)).await;
    expect(after, Outcome::Stored, &[], "a good request after all that");
    let stored = 3 + stored_of_cut + 1 + 2 * subject.encodings().len();
    assert_eq!(
        sink.rows(subject.table()),
        stored,
        "{name}: what was stored before is intact, and nothing refused was stored"
    );
}
