//! Carrying the trace context across `tokio::spawn`, `spawn_blocking` and channels.
//!
//! The active context lives in a thread local, so it does not follow work onto another
//! task or thread by itself. These helpers capture it where the work is handed off and
//! restore it where the work runs — both the OpenTelemetry context (this crate's
//! [`crate::Span`]s) and the `tracing` span (`#[tracing::instrument]`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use sightline_instrument::task::{self, Traced};
//!
//! let handle = task::spawn(async { /* spans here are children of the caller's span */ });
//! handle.await.unwrap();
//!
//! let sum = task::spawn_blocking(|| 2 + 2).await.unwrap();
//! assert_eq!(sum, 4);
//!
//! let (tx, mut rx) = tokio::sync::mpsc::channel(8);
//! tx.send(Traced::new("job")).await.unwrap();
//! let job = rx.recv().await.unwrap();
//! let value = job.in_context(|job| job.len());
//! assert_eq!(value, 3);
//! # }
//! ```

use std::future::Future;

use opentelemetry::context::FutureExt as _;
use opentelemetry::Context;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// `tokio::spawn` with the caller's trace context.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current_context(future))
}

/// `tokio::task::spawn_blocking` with the caller's trace context.
pub fn spawn_blocking<F, R>(work: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let cx = Context::current();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let _attached = cx.attach();
        work()
    })
}

/// Wraps a future so that it runs in the current trace context wherever it is polled.
pub fn in_current_context<F: Future>(future: F) -> impl Future<Output = F::Output> {
    future
        .with_context(Context::current())
        .instrument(tracing::Span::current())
}

/// A value sent to another task together with the sender's trace context.
#[derive(Debug, Clone)]
pub struct Traced<T> {
    value: T,
    cx: Context,
    span: tracing::Span,
}

impl<T> Traced<T> {
    /// Captures the current context with `value`.
    pub fn new(value: T) -> Self {
        Traced {
            value,
            cx: Context::current(),
            span: tracing::Span::current(),
        }
    }

    /// Runs `f` on the value in the sender's context.
    pub fn in_context<R>(self, f: impl FnOnce(T) -> R) -> R {
        let _entered = self.span.enter();
        let _attached = self.cx.attach();
        f(self.value)
    }

    /// The value and the sender's context, to attach or to use as a parent.
    pub fn into_parts(self) -> (T, Context) {
        (self.value, self.cx)
    }
}
