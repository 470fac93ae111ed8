//! The service map of a time window: services (measured by their own requests, from
//! `span_red`), the databases, queues and external targets they call (measured by the calls
//! reaching them), and the edges between them (from `service_edges`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sightline_storage::rollup::{EdgeKey, Measures, NodeKind, RedKey};

use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::rollups::{self, entry_measures, Summary, Window};

#[derive(Debug, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub source: String,
    pub source_kind: &'static str,
    pub target: String,
    pub target_kind: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Serialize)]
pub struct Topology {
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
    /// What rates divide by: the seconds of the window the store has data for.
    pub rate_seconds: f64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

pub async fn topology(engine: &QueryEngine, window: &Window) -> Result<Topology, QueryError> {
    let red = rollups::red_rows(engine, Some(window), None).await?;
    let edge_rows = rollups::edge_rows(engine, Some(window)).await?;
    Ok(build(
        &red,
        &edge_rows,
        window,
        window.covered_seconds(engine),
    ))
}

fn build(
    red: &[(RedKey, Measures)],
    edge_rows: &[(EdgeKey, Measures)],
    window: &Window,
    seconds: f64,
) -> Topology {
    let mut by_service: BTreeMap<Arc<str>, Vec<(&RedKey, &Measures)>> = BTreeMap::new();
    for (k, m) in red {
        by_service
            .entry(k.service.clone())
            .or_default()
            .push((k, m));
    }
    let mut nodes: BTreeMap<Arc<str>, (NodeKind, Measures)> = by_service
        .into_iter()
        .map(|(service, rows)| {
            let measures = entry_measures(rows.iter().map(|(k, m)| (*k, *m)));
            (service, (NodeKind::Service, measures))
        })
        .collect();

    let mut edges: BTreeMap<(Arc<str>, NodeKind, Arc<str>, NodeKind), Measures> = BTreeMap::new();
    for (k, m) in edge_rows {
        edges
            .entry((
                k.source.clone(),
                k.source_kind,
                k.target.clone(),
                k.target_kind,
            ))
            .or_default()
            .merge(m);
    }
    // Nodes that send no spans of their own are measured by what reaches them.
    for ((source, source_kind, target, target_kind), m) in &edges {
        for (name, kind, incoming) in [(source, *source_kind, false), (target, *target_kind, true)]
        {
            if kind == NodeKind::Service && nodes.contains_key(name) {
                continue;
            }
            let node = nodes
                .entry(name.clone())
                .or_insert_with(|| (kind, Measures::default()));
            if incoming && node.0 != NodeKind::Service {
                node.1.merge(m);
            }
        }
    }

    Topology {
        start_unix_nano: window.start,
        end_unix_nano: window.end,
        rate_seconds: seconds,
        nodes: nodes
            .into_iter()
            .map(|(id, (kind, m))| Node {
                id: id.to_string(),
                kind: kind.as_str(),
                summary: Summary::of(&m, seconds),
            })
            .collect(),
        edges: edges
            .into_iter()
            .map(|((source, source_kind, target, target_kind), m)| Edge {
                source: source.to_string(),
                source_kind: source_kind.as_str(),
                target: target.to_string(),
                target_kind: target_kind.as_str(),
                summary: Summary::of(&m, seconds),
            })
            .collect(),
    }
}
