//! The memory budget: one byte count shared by everything that holds rows in memory — request
//! bodies while decoded, batches waiting for the WAL, buffers, chunks being flushed, merges.
//! A reservation that does not fit is refused at once, which a receiver answers with 503.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Memory not tracked by the budget: Parquet encoders and decoders, request decoders, the
/// allocator's retained free memory. Measured at about 300 MiB under the ingest benchmark
/// (docs/benchmarks.md), so that much is set aside before rows are admitted.
const UNTRACKED_HEADROOM: usize = 384 << 20;

/// The part of the process's memory budget that buffered and in-flight rows may take: the
/// budget less the larger of a quarter of it and [`UNTRACKED_HEADROOM`], and never less than a
/// quarter of the budget.
pub fn tracked_limit(budget: usize) -> usize {
    budget
        .saturating_sub((budget / 4).max(UNTRACKED_HEADROOM))
        .max(budget / 4)
}

/// A byte budget shared by everything that holds rows in memory.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
    /// Writers waiting for room (see [`MemoryBudget::wait_for_room`]).
    waiters: AtomicUsize,
    freed: tokio::sync::Notify,
}

/// Bytes held against the budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            waiters: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Reserves `bytes`, or `None` when that would go over the limit.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: Arc::clone(self),
                        bytes,
                    })
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether `bytes` more would fit now.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.used().saturating_add(bytes) <= self.limit
    }

    /// Waits until `bytes` more would fit (a flush gives memory back), so that a writer arriving
    /// at a full budget waits its turn rather than being refused and coming back later. It
    /// reserves nothing: the caller reserves once it returns, and bounds the wait itself.
    pub async fn wait_for_room(&self, bytes: usize) {
        if self.has_room(bytes) {
            return;
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
        loop {
            let freed = self.freed.notified();
            if self.has_room(bytes) {
                break;
            }
            freed.await;
        }
        self.waiters.fetch_sub(1, Ordering::AcqRel);
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Reservation {
    /// Holds `bytes` more, or returns false (holding what it held) when the budget is full.
    pub fn try_grow(&mut self, bytes: usize) -> bool {
        match self.budget.try_reserve(bytes) {
            Some(more) => {
                self.bytes += more.bytes;
                // `more` is now part of `self`; it must not give its bytes back on drop.
                let mut more = more;
                more.bytes = 0;
                true
            }
            None => false,
        }
    }

    /// Gives back what is no longer held (a request's body once decoded, say).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_limit_leaves_headroom() {
        assert_eq!(tracked_limit(1 << 30), (1 << 30) - (384 << 20));
        assert_eq!(tracked_limit(8 << 30), 6 << 30);
        assert_eq!(tracked_limit(4 << 20), 1 << 20);
    }

    #[test]
    fn a_waiter_wakes_when_memory_is_given_back() {
        let budget = MemoryBudget::new(100);
        let held = budget.try_reserve(90).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waiting = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(budget.wait_for_room(50))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished(), "no room yet");
        drop(held);
        waiting.join().unwrap();
        rt.block_on(budget.wait_for_room(100));
    }

    #[test]
    fn memory_budget_refuses_past_its_limit_and_frees_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none());
        let mut b = budget.try_reserve(40).unwrap();
        b.shrink_to(10);
        assert_eq!(budget.used(), 70);
        assert!(!b.try_grow(31));
        assert!(b.try_grow(30));
        assert_eq!((b.bytes(), budget.used()), (40, 100));
        b.shrink_to(10);
        drop(a);
        assert_eq!(budget.used(), 10);
    }
}
