//! Receiver errors, mapped once to HTTP statuses and gRPC codes at the edge.

use sightline_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Decode(String),
    #[error("request body exceeds {limit} bytes{after}", after = if *.decompressed { " after decompression" } else { "" })]
    TooLarge { limit: usize, decompressed: bool },
    /// The content type sent, and those the endpoint takes.
    #[error("unsupported content type {0:?}: use {1}")]
    UnsupportedContentType(String, &'static str),
    /// The encoding sent, and those the endpoint takes.
    #[error("unsupported content encoding {0:?}: use {1}")]
    UnsupportedEncoding(String, String),
    #[error("server is saturated ({0}); retry later")]
    Saturated(&'static str),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// gRPC status codes used by the receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    InvalidArgument = 3,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// Seconds a client should wait before retrying a refused write.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IngestError {
    pub fn http_status(&self) -> u16 {
        match self {
            IngestError::Decode(_) => 400,
            IngestError::TooLarge { .. } => 413,
            IngestError::UnsupportedContentType(..) | IngestError::UnsupportedEncoding(..) => 415,
            IngestError::Saturated(_) | IngestError::Unavailable(_) => 503,
            IngestError::Internal(_) => 500,
        }
    }

    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            IngestError::Decode(_) => GrpcCode::InvalidArgument,
            IngestError::TooLarge { .. } => GrpcCode::ResourceExhausted,
            IngestError::UnsupportedContentType(..) | IngestError::UnsupportedEncoding(..) => {
                GrpcCode::Unimplemented
            }
            IngestError::Saturated(_) | IngestError::Unavailable(_) => GrpcCode::Unavailable,
            IngestError::Internal(_) => GrpcCode::Internal,
        }
    }

    /// A short name of the kind of error, for counting refusals by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Decode(_) => "bad_request",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::UnsupportedContentType(..) => "unsupported_content_type",
            IngestError::UnsupportedEncoding(..) => "unsupported_encoding",
            IngestError::Saturated(_) => "saturated",
            IngestError::Unavailable(_) => "unavailable",
            IngestError::Internal(_) => "internal",
        }
    }

    /// Whether the client should retry, and so gets `Retry-After` / `RetryInfo`.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Saturated(_) | IngestError::Unavailable(_)
        )
    }
}

impl From<StorageError> for IngestError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Saturated(what) => IngestError::Saturated(what),
            StorageError::Closed | StorageError::WalFailed(_) => {
                IngestError::Unavailable(e.to_string())
            }
            other => IngestError::Internal(other.to_string()),
        }
    }
}
