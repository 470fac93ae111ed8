//! Pairs the two halves of a call across services: a CLIENT (or PRODUCER) span and the SERVER
//! (or CONSUMER) span whose parent it is. The halves come in any order, in different requests,
//! seconds apart; the first one waits here — for a bounded time, in a bounded number of slots —
//! for the other.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::table::NodeKind;

/// Trace id followed by the caller's span id: what both halves know of their call.
pub type CallKey = [u8; 24];

pub fn call_key(trace_id: &[u8], span_id: &[u8]) -> CallKey {
    let mut key = [0u8; 24];
    let t = trace_id.len().min(16);
    key[..t].copy_from_slice(&trace_id[..t]);
    let s = span_id.len().min(8);
    key[16..16 + s].copy_from_slice(&span_id[..s]);
    key
}

/// One half of a call, as much of it as the edge needs.
#[derive(Debug, Clone)]
pub struct Half {
    pub service: Arc<str>,
    pub start_unix_nano: i64,
    pub duration_nano: i64,
    pub error: bool,
    /// Load-test traffic (see [`crate::span_batch::marks_load_test`]).
    pub load_test: bool,
    /// For a caller: the node to draw the edge to if no callee half ever comes (from
    /// `peer.service` or `server.address`).
    pub fallback: Option<Arc<str>>,
}

/// A call between two nodes, ready to be counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub source: Arc<str>,
    pub source_kind: NodeKind,
    pub target: Arc<str>,
    pub target_kind: NodeKind,
    pub start_unix_nano: i64,
    pub duration_nano: i64,
    /// The callee's own duration, when its half was seen.
    pub callee_duration_nano: Option<i64>,
    pub error: bool,
    /// Load-test traffic: either half says so.
    pub load_test: bool,
}

impl Call {
    /// The caller's view: its start and duration, and an error on either side.
    fn paired(caller: Half, callee: &Half) -> Self {
        Call {
            source: caller.service,
            source_kind: NodeKind::Service,
            target: callee.service.clone(),
            target_kind: NodeKind::Service,
            start_unix_nano: caller.start_unix_nano,
            duration_nano: caller.duration_nano,
            callee_duration_nano: Some(callee.duration_nano),
            error: caller.error || callee.error,
            load_test: caller.load_test || callee.load_test,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Caller,
    Callee,
}

pub struct Pairing {
    wait: Duration,
    max_pending: usize,
    callers: HashMap<CallKey, (Half, Instant)>,
    callees: HashMap<CallKey, (Half, Instant)>,
    /// Arrival order, for expiry; entries already paired are skipped when they reach the front.
    order: VecDeque<(Instant, CallKey, Side)>,
    /// Halves that expired without a partner or a fallback.
    pub unpaired: u64,
}

impl Pairing {
    pub fn new(wait: Duration, max_pending: usize) -> Self {
        Self {
            wait,
            max_pending: max_pending.max(1),
            callers: HashMap::new(),
            callees: HashMap::new(),
            order: VecDeque::new(),
            unpaired: 0,
        }
    }

    pub fn pending(&self) -> usize {
        self.callers.len() + self.callees.len()
    }

    /// A CLIENT or PRODUCER span: pairs with a waiting callee, or waits for one.
    pub fn caller(&mut self, key: CallKey, half: Half, now: Instant, out: &mut Vec<Call>) {
        match self.callees.remove(&key) {
            Some((callee, _)) => out.push(Call::paired(half, &callee)),
            None => self.wait_for_partner(key, half, Side::Caller, now, out),
        }
    }

    /// A SERVER or CONSUMER span with a parent: pairs with a waiting caller, or waits for one.
    pub fn callee(&mut self, key: CallKey, half: Half, now: Instant, out: &mut Vec<Call>) {
        match self.callers.remove(&key) {
            Some((caller, _)) => out.push(Call::paired(caller, &half)),
            None => self.wait_for_partner(key, half, Side::Callee, now, out),
        }
    }

    fn wait_for_partner(
        &mut self,
        key: CallKey,
        half: Half,
        side: Side,
        now: Instant,
        out: &mut Vec<Call>,
    ) {
        let map = match side {
            Side::Caller => &mut self.callers,
            Side::Callee => &mut self.callees,
        };
        // A resent span (a client's retry of the same export) replaces its earlier copy.
        map.insert(key, (half, now));
        self.order.push_back((now, key, side));
        while self.pending() > self.max_pending {
            if !self.expire_front(out) {
                break;
            }
        }
    }

    /// Gives up on halves that waited longer than the wait: a caller with a fallback target
    /// becomes an edge to it, anything else is counted as unpaired.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Call>) {
        while let Some((arrived, ..)) = self.order.front() {
            if now.saturating_duration_since(*arrived) < self.wait {
                break;
            }
            self.expire_front(out);
        }
    }

    /// Resolves every waiting half now (at shutdown).
    pub fn expire_all(&mut self, out: &mut Vec<Call>) {
        while self.expire_front(out) {}
    }

    fn expire_front(&mut self, out: &mut Vec<Call>) -> bool {
        let Some((arrived, key, side)) = self.order.pop_front() else {
            return false;
        };
        let map = match side {
            Side::Caller => &mut self.callers,
            Side::Callee => &mut self.callees,
        };
        // Only the entry this queue slot was made for: it may have been paired or replaced.
        if map.get(&key).is_some_and(|(_, at)| *at == arrived) {
            if let Some((half, _)) = map.remove(&key) {
                match (side, half.fallback.clone()) {
                    (Side::Caller, Some(target)) => out.push(Call {
                        source: half.service,
                        source_kind: NodeKind::Service,
                        target,
                        target_kind: NodeKind::External,
                        start_unix_nano: half.start_unix_nano,
                        duration_nano: half.duration_nano,
                        callee_duration_nano: None,
                        error: half.error,
                        load_test: half.load_test,
                    }),
                    _ => self.unpaired += 1,
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(service: &str, fallback: Option<&str>) -> Half {
        Half {
            load_test: false,
            service: service.into(),
            start_unix_nano: 1_000,
            duration_nano: 50,
            error: false,
            fallback: fallback.map(Into::into),
        }
    }

    #[test]
    fn halves_pair_in_either_order() {
        let mut p = Pairing::new(Duration::from_secs(10), 100);
        let now = Instant::now();
        let mut out = Vec::new();
        p.callee(
            call_key(&[1; 16], &[2; 8]),
            half("cart", None),
            now,
            &mut out,
        );
        assert!(out.is_empty());
        let mut caller = half("frontend", None);
        caller.duration_nano = 70;
        p.caller(call_key(&[1; 16], &[2; 8]), caller, now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((&*out[0].source, &*out[0].target), ("frontend", "cart"));
        assert_eq!(out[0].duration_nano, 70, "the caller's duration");
        p.caller(
            call_key(&[3; 16], &[4; 8]),
            half("cart", None),
            now,
            &mut out,
        );
        p.callee(
            call_key(&[3; 16], &[4; 8]),
            half("payments", None),
            now,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn expiry_uses_the_fallback_or_counts_unpaired() {
        let mut p = Pairing::new(Duration::from_secs(10), 100);
        let now = Instant::now();
        let mut out = Vec::new();
        p.caller(
            call_key(&[1; 16], &[1; 8]),
            half("cart", Some("api.stripe.com")),
            now,
            &mut out,
        );
        p.caller(
            call_key(&[1; 16], &[2; 8]),
            half("cart", None),
            now,
            &mut out,
        );
        p.callee(
            call_key(&[1; 16], &[3; 8]),
            half("auth", None),
            now,
            &mut out,
        );
        p.expire(now + Duration::from_secs(9), &mut out);
        assert!(out.is_empty());
        p.expire(now + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].target, "api.stripe.com");
        assert_eq!(out[0].target_kind, NodeKind::External);
        assert_eq!(p.unpaired, 2);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn the_oldest_half_gives_way_when_the_slots_are_full() {
        let mut p = Pairing::new(Duration::from_secs(10), 2);
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..5u8 {
            p.callee(
                call_key(&[i; 16], &[i; 8]),
                half("cart", None),
                now,
                &mut out,
            );
        }
        assert_eq!(p.pending(), 2);
        assert_eq!(p.unpaired, 3);
        // The two newest still pair.
        p.caller(
            call_key(&[4; 16], &[4; 8]),
            half("frontend", None),
            now,
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }
}
