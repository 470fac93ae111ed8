//! What there is to look at: services (instrumented ones, and the databases, queues and external
//! targets their client spans name) and each service's operations.

use datafusion::arrow::array::{Array, Int8Array, RecordBatch};
use serde::Serialize;

use crate::columns;
use crate::engine::QueryEngine;
use crate::error::QueryError;

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceEntry {
    pub name: String,
    /// `service`, `database`, `messaging` or `external`.
    pub kind: &'static str,
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OperationEntry {
    pub name: String,
    pub span_kind: &'static str,
}

fn string_column(b: &RecordBatch, i: usize) -> Result<Vec<Option<String>>, QueryError> {
    let a = columns::as_strings(b.column(i))?;
    Ok((0..a.len()).map(|r| columns::opt_string(&a, r)).collect())
}

async fn distinct_strings(engine: &QueryEngine, sql: &str) -> Result<Vec<String>, QueryError> {
    let batches = engine.context().sql(sql).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(string_column(b, 0)?.into_iter().flatten());
    }
    Ok(out)
}

/// Instrumented services, then the uninstrumented targets their CLIENT and PRODUCER spans name.
pub async fn services(engine: &QueryEngine) -> Result<Vec<ServiceEntry>, QueryError> {
    let instrumented = distinct_strings(engine, "SELECT DISTINCT service_name FROM spans").await?;
    let mut out: Vec<ServiceEntry> = instrumented
        .iter()
        .map(|name| ServiceEntry {
            name: name.clone(),
            kind: "service",
        })
        .collect();
    let targets = [
        ("database", "db_system"),
        ("messaging", "messaging_system"),
        ("external", "peer_service"),
    ];
    for (kind, column) in targets {
        let sql = format!(
            "SELECT DISTINCT {column} FROM spans WHERE span_kind IN (3, 4) AND {column} IS NOT NULL"
        );
        for name in distinct_strings(engine, &sql).await? {
            if !out.iter().any(|s| s.name == name) {
                out.push(ServiceEntry { name, kind });
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn span_kind_name(k: i8) -> &'static str {
    match k {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The operations (span name and kind) of one service.
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
) -> Result<Vec<OperationEntry>, QueryError> {
    let df = engine
        .context()
        .table("spans")
        .await?
        .filter(
            datafusion::prelude::col("service_name")
                .eq(datafusion::prelude::lit(service.to_string())),
        )?
        .select_columns(&["span_name", "span_kind"])?
        .distinct()?;
    let mut out = Vec::new();
    for b in df.collect().await? {
        let names = string_column(&b, 0)?;
        let kinds = b
            .column(1)
            .as_any()
            .downcast_ref::<Int8Array>()
            .ok_or_else(|| QueryError::Execution("span_kind is not Int8".into()))?;
        for (r, name) in names.into_iter().enumerate() {
            out.push(OperationEntry {
                name: name.unwrap_or_default(),
                span_kind: span_kind_name(kinds.value(r)),
            });
        }
    }
    out.sort();
    Ok(out)
}
