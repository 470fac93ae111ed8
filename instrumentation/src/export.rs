//! The span pipeline between the application and the exporter: a bounded queue that
//! never blocks the caller, and a worker thread that batches and exports.
//!
//! When the collector is down, exports fail and the queue fills; from then on finished
//! spans are dropped and counted ([`ExportStats`]) instead of blocking or growing memory.
//! When the collector comes back, the next batch goes through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use crate::propagation::SofaTracerIds;

/// SOFATracer's load-test mark: business baggage `mark=T`.
pub const LOAD_TEST_BAGGAGE: &str = "mark";

/// Counters of the span pipeline, shared with the application.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    unsampled_errors: AtomicU64,
}

impl ExportStats {
    /// Spans the exporter accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the queue was full (collector slow or down).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans in batches the exporter failed to send.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Spans of unsampled traces kept because they ended in error.
    pub fn unsampled_errors(&self) -> u64 {
        self.unsampled_errors.load(Ordering::Relaxed)
    }
}

/// Queue and batch sizes of the span pipeline.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Spans held at most while waiting to be exported.
    pub max_queue: usize,
    /// Spans per export call at most.
    pub max_batch: usize,
    /// How long a non-full batch waits.
    pub delay: Duration,
    /// How long [`SpanProcessor::force_flush`] and shutdown wait at most.
    pub timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// One export call, to be driven to completion by the pipeline's runner.
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = OTelSdkResult> + Send + 'a>>;

/// What wakes the worker. Spans themselves never do: waking a thread per span would cost
/// more than the span.
enum Command {
    /// A full batch is waiting.
    BatchReady,
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// A [`SpanProcessor`] with a bounded, non-blocking queue and a batching export thread.
///
/// It exports sampled spans, and also the spans of unsampled traces that end in error
/// when the sampler recorded them (see [`crate::sampling`]).
#[derive(Debug)]
pub struct QueueingProcessor {
    queue: SyncSender<SpanData>,
    control: SyncSender<Command>,
    // Spans queued and not yet taken by the worker.
    pending: Arc<AtomicUsize>,
    max_batch: usize,
    stats: Arc<ExportStats>,
    timeout: Duration,
    worker: Mutex<Option<JoinHandle<()>>>,
    // Handed to the exporter (which lives on the worker) before its next export.
    resource: Arc<Mutex<Option<Resource>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::BatchReady => "BatchReady",
            Command::Flush(_) => "Flush",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

impl QueueingProcessor {
    /// Starts the export thread. `run` turns an export future into its result: the
    /// gRPC exporter needs it driven inside the runtime its channel lives on.
    pub fn start<E, R>(exporter: E, config: QueueConfig, stats: Arc<ExportStats>, run: R) -> Self
    where
        E: SpanExporter + 'static,
        R: for<'a> Fn(ExportFuture<'a>) -> OTelSdkResult + Send + 'static,
    {
        let max_batch = config.max_batch.max(1);
        let (queue, spans) = mpsc::sync_channel(config.max_queue.max(1));
        let (control, commands) = mpsc::sync_channel(16);
        let pending = Arc::new(AtomicUsize::new(0));
        let resource = Arc::new(Mutex::new(None));
        let mut worker = Worker {
            exporter,
            spans,
            commands,
            pending: pending.clone(),
            stats: stats.clone(),
            config: QueueConfig {
                max_batch,
                ..config
            },
            run,
            resource: resource.clone(),
            reported: (0, 0),
            last_report: Instant::now() - Duration::from_secs(10),
        };
        let worker = std::thread::Builder::new()
            .name("sightline-span-export".into())
            .spawn(move || worker.run())
            .ok();
        QueueingProcessor {
            queue,
            control,
            pending,
            max_batch,
            stats,
            timeout: config.timeout,
            worker: Mutex::new(worker),
            resource,
        }
    }

    fn command(
        &self,
        make: fn(SyncSender<OTelSdkResult>) -> Command,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (reply, answer) = mpsc::sync_channel(1);
        self.control
            .send(make(reply))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        // Load-test (shadow) requests carry SOFATracer's business baggage `mark=T`: every span
        // of one says so, as SOFATracer's own reporters do, so the backend can keep it apart.
        if cx
            .baggage()
            .get(LOAD_TEST_BAGGAGE)
            .is_some_and(|v| v.as_str() == "T")
        {
            use opentelemetry::trace::Span as _;
            span.set_attribute(KeyValue::new(LOAD_TEST_BAGGAGE, "T"));
        }
        // Keep the SOFATracer ids a remote parent came with (see `propagation::sofa`).
        if let Some(ids) = cx.get::<SofaTracerIds>() {
            let parent = cx.span().span_context().clone();
            // Only the span whose parent is the SOFATracer caller itself.
            if parent.is_remote() && parent.trace_id() == ids.mapped {
                use opentelemetry::trace::Span as _;
                span.set_attribute(KeyValue::new("sofatracer.trace_id", ids.trace_id.clone()));
                span.set_attribute(KeyValue::new(
                    "sofatracer.parent_span_id",
                    ids.span_id.clone(),
                ));
            }
        }
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            if !matches!(span.status, Status::Error { .. }) {
                return;
            }
            self.stats.unsampled_errors.fetch_add(1, Ordering::Relaxed);
        }
        match self.queue.try_send(span) {
            Ok(()) => {
                if self.pending.fetch_add(1, Ordering::Relaxed) + 1 == self.max_batch {
                    let _ = self.control.try_send(Command::BatchReady);
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.command(Command::Flush, self.timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.command(Command::Shutdown, timeout);
        if let Ok(mut worker) = self.worker.lock() {
            if let Some(handle) = worker.take() {
                if result.is_ok() {
                    let _ = handle.join();
                }
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Ok(mut slot) = self.resource.lock() {
            *slot = Some(resource.clone());
        }
    }
}

struct Worker<E, R> {
    exporter: E,
    spans: Receiver<SpanData>,
    commands: Receiver<Command>,
    pending: Arc<AtomicUsize>,
    stats: Arc<ExportStats>,
    config: QueueConfig,
    run: R,
    resource: Arc<Mutex<Option<Resource>>>,
    reported: (u64, u64),
    last_report: Instant,
}

impl<E, R> Worker<E, R>
where
    E: SpanExporter,
    R: for<'a> Fn(ExportFuture<'a>) -> OTelSdkResult,
{
    fn run(&mut self) {
        loop {
            let command = match self.commands.recv_timeout(self.config.delay) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.drain();
                    return;
                }
            };
            let result = self.drain();
            match command {
                None | Some(Command::BatchReady) => {}
                Some(Command::Flush(reply)) => {
                    let _ = reply.send(result);
                }
                Some(Command::Shutdown(reply)) => {
                    let _ = self.exporter.shutdown_with_timeout(self.config.timeout);
                    let _ = reply.send(result);
                    return;
                }
            }
        }
    }

    /// Exports everything queued, in batches; the result of the last export.
    fn drain(&mut self) -> OTelSdkResult {
        let mut result = Ok(());
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.config.max_batch);
        while let Ok(span) = self.spans.try_recv() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            batch.push(span);
            if batch.len() >= self.config.max_batch {
                result = self.export_and_report(&mut batch);
            }
        }
        if !batch.is_empty() {
            result = self.export_and_report(&mut batch);
        }
        result
    }

    /// Exports, and warns (at most every 10 s) when spans were dropped or failed since the
    /// last warning: the application is never blocked, but it is told.
    fn export_and_report(&mut self, batch: &mut Vec<SpanData>) -> OTelSdkResult {
        let result = self.export(batch);
        let now = (self.stats.dropped(), self.stats.failed());
        if now != self.reported && self.last_report.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(
                dropped = now.0 - self.reported.0,
                failed = now.1 - self.reported.1,
                error = result.as_ref().err().map(|e| e.to_string()),
                "spans lost: the collector is slow or unreachable"
            );
            self.reported = now;
            self.last_report = Instant::now();
        }
        result
    }

    fn export(&mut self, batch: &mut Vec<SpanData>) -> OTelSdkResult {
        if let Some(resource) = self.resource.lock().ok().and_then(|mut r| r.take()) {
            self.exporter.set_resource(&resource);
        }
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let result = (self.run)(Box::pin(self.exporter.export(spans)));
        match &result {
            Ok(()) => self.stats.exported.fetch_add(count, Ordering::Relaxed),
            Err(_) => self.stats.failed.fetch_add(count, Ordering::Relaxed),
        };
        result
    }
}
