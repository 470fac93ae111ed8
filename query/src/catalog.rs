//! What there is to look at: services (instrumented ones, and the databases, queues and external
//! targets they call) and each service's operations — read from the rollups, so listing them
//! costs a scan of per-minute rows, not of spans.

use std::collections::BTreeSet;

use serde::Serialize;
use sightline_storage::rollup::NodeKind;

use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::rollups::{self, Window};

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

const SPAN_KINDS: [(i8, &str); 6] = [
    (0, "unspecified"),
    (1, "internal"),
    (2, "server"),
    (3, "client"),
    (4, "producer"),
    (5, "consumer"),
];

pub fn span_kind_name(k: i8) -> &'static str {
    SPAN_KINDS
        .iter()
        .find(|(n, _)| *n == k)
        .map(|(_, name)| *name)
        .unwrap_or("unspecified")
}

/// A span kind by name (`server`) or OTLP number (`2`).
pub fn span_kind_number(s: &str) -> Option<i8> {
    SPAN_KINDS
        .iter()
        .find(|(n, name)| *name == s || n.to_string() == s)
        .map(|(n, _)| *n)
}

/// Instrumented services, then the databases, queues and external targets they call; over all
/// the data kept, or over a window.
pub async fn services(
    engine: &QueryEngine,
    window: Option<&Window>,
) -> Result<Vec<ServiceEntry>, QueryError> {
    let mut out: BTreeSet<ServiceEntry> = rollups::red_rows(engine, window, None)
        .await?
        .into_iter()
        .map(|(k, _)| ServiceEntry {
            name: k.service.to_string(),
            kind: NodeKind::Service.as_str(),
        })
        .collect();
    for (k, _) in rollups::edge_rows(engine, window).await? {
        for (name, kind) in [(k.source, k.source_kind), (k.target, k.target_kind)] {
            if kind != NodeKind::Service && !out.iter().any(|s| *s.name == *name) {
                out.insert(ServiceEntry {
                    name: name.to_string(),
                    kind: kind.as_str(),
                });
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The operations (span name and kind) of one service.
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
    window: Option<&Window>,
) -> Result<Vec<OperationEntry>, QueryError> {
    let rows = rollups::red_rows(engine, window, Some(service)).await?;
    let out: BTreeSet<OperationEntry> = rows
        .into_iter()
        .map(|(k, _)| OperationEntry {
            name: k.operation.to_string(),
            span_kind: span_kind_name(k.span_kind),
        })
        .collect();
    Ok(out.into_iter().collect())
}
