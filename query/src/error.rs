use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query itself is wrong: syntax, unknown column, a statement that would write.
    #[error("{0}")]
    BadQuery(String),
    #[error("query exceeded its time budget of {0:?}")]
    Timeout(std::time::Duration),
    #[error("query failed: {0}")]
    Execution(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        // Planning errors arrive wrapped (context, diagnostics): classify by the root cause.
        let bad_query = matches!(
            e.find_root(),
            DataFusionError::SQL(..)
                | DataFusionError::Plan(_)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_)
        );
        if bad_query {
            QueryError::BadQuery(e.to_string())
        } else {
            QueryError::Execution(e.to_string())
        }
    }
}
