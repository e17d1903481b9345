//! Global unique ids, snowflake style: 41 bits of milliseconds since 2024-01-01, 10 bits of worker id
//! (one per proxy process), 12 bits of sequence. Monotonic per generator even if the clock steps back
//! (the generator keeps its own time and borrows future milliseconds when a millisecond is exhausted);
//! unique across proxies as long as worker ids differ. The clock is passed in, so this stays pure.

/// Milliseconds of the Unix epoch at 2024-01-01T00:00:00Z (the id epoch).
pub const ID_EPOCH_MS: u64 = 1_704_067_200_000;
const WORKER_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// Generates ids for one proxy (one per executor core would need distinct worker ids; share it or
/// give each core its own worker id).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    worker: u64,
    last_ms: u64,
    seq: u64,
}

impl IdGenerator {
    /// A generator for worker `worker` (taken modulo 1024).
    pub fn new(worker: u16) -> Self {
        Self {
            worker: u64::from(worker) & ((1 << WORKER_BITS) - 1),
            last_ms: 0,
            seq: 0,
        }
    }

    /// The next id, given the current Unix time in milliseconds.
    pub fn next(&mut self, now_unix_ms: u64) -> u64 {
        let now = now_unix_ms.saturating_sub(ID_EPOCH_MS);
        if now > self.last_ms {
            self.last_ms = now;
            self.seq = 0;
        } else if self.seq < MAX_SEQ {
            self.seq += 1;
        } else {
            // This millisecond is used up (or the clock went back): borrow the next one.
            self.last_ms += 1;
            self.seq = 0;
        }
        (self.last_ms << (WORKER_BITS + SEQ_BITS)) | (self.worker << SEQ_BITS) | self.seq
    }

    /// The worker id encoded in `id`.
    pub fn worker_of(id: u64) -> u16 {
        ((id >> SEQ_BITS) & ((1 << WORKER_BITS) - 1)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_when_the_clock_goes_back_or_a_millisecond_fills() {
        let mut g = IdGenerator::new(5);
        let t = ID_EPOCH_MS + 1000;
        let mut last = 0;
        for i in 0..10_000u64 {
            let now = if i % 3 == 0 { t - 50 } else { t };
            let id = g.next(now);
            assert!(id > last, "id {id} not above {last} at {i}");
            assert_eq!(IdGenerator::worker_of(id), 5);
            last = id;
        }
    }

    #[test]
    fn distinct_workers_never_collide() {
        let mut a = IdGenerator::new(1);
        let mut b = IdGenerator::new(2);
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000 {
            let now = ID_EPOCH_MS + i / 7;
            assert!(seen.insert(a.next(now)));
            assert!(seen.insert(b.next(now)));
        }
    }
}
