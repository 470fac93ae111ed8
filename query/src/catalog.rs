//! What there is to look at: services (instrumented ones, and the databases, queues and external
//! targets they call) and each service's operations — read from the key columns of the rollups,
//! so listing them costs a scan of a few small columns, not of spans or sketches.

use std::collections::BTreeSet;

use datafusion::arrow::array::Int8Array;
use datafusion::prelude::lit;
use serde::Serialize;
use sightline_storage::rollup::table::col;
use sightline_storage::rollup::{self, NodeKind};

use crate::columns;
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::rollups::{distinct_keys, Window};

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
    let filter = window.map_or(lit(true), Window::filter);
    let mut out = BTreeSet::new();
    for b in distinct_keys(
        engine,
        rollup::SPAN_RED_TABLE,
        filter.clone(),
        &[col::SERVICE_NAME],
    )
    .await?
    {
        let names = columns::strings(&b, col::SERVICE_NAME)?;
        out.extend((0..b.num_rows()).map(|r| ServiceEntry {
            name: names.value(r).to_string(),
            kind: NodeKind::Service.as_str(),
        }));
    }
    let ends = [col::SOURCE, col::SOURCE_KIND, col::TARGET, col::TARGET_KIND];
    for b in distinct_keys(engine, rollup::SERVICE_EDGES_TABLE, filter, &ends).await? {
        let [source, source_kind, target, target_kind] = ends.map(|c| columns::strings(&b, c));
        let (source, source_kind, target, target_kind) =
            (source?, source_kind?, target?, target_kind?);
        for r in 0..b.num_rows() {
            for (name, kind) in [
                (source.value(r), source_kind.value(r)),
                (target.value(r), target_kind.value(r)),
            ] {
                let kind = NodeKind::parse(kind).unwrap_or(NodeKind::External);
                if kind != NodeKind::Service && !out.iter().any(|s| s.name == name) {
                    out.insert(ServiceEntry {
                        name: name.to_string(),
                        kind: kind.as_str(),
                    });
                }
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
    let filter = window
        .map_or(lit(true), Window::filter)
        .and(datafusion::prelude::col(col::SERVICE_NAME).eq(lit(service.to_string())));
    let mut out = BTreeSet::new();
    for b in distinct_keys(
        engine,
        rollup::SPAN_RED_TABLE,
        filter,
        &[col::SPAN_NAME, col::SPAN_KIND],
    )
    .await?
    {
        let names = columns::strings(&b, col::SPAN_NAME)?;
        let kinds = columns::typed::<Int8Array>(&b, col::SPAN_KIND)?;
        out.extend((0..b.num_rows()).map(|r| OperationEntry {
            name: names.value(r).to_string(),
            span_kind: span_kind_name(kinds.value(r)),
        }));
    }
    Ok(out.into_iter().collect())
}
