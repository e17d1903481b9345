//! Giving memory back to the OS after many connections close.
//!
//! Every connection takes buffers (a client's read and reply buffers, TLS state, a session's
//! tables); when it closes they are freed, but freed is not returned: mimalloc (the release
//! binary's allocator) keeps the pages of an idle thread's heap until that thread allocates
//! again or collects, and glibc's malloc keeps free chunks inside its arenas. An executor whose
//! thousands of idle clients just left would keep hundreds of MB that nothing uses.
//!
//! So each executor counts its open connections ([`opened`], [`closed`]) and, when they drop
//! sharply from their peak (by a quarter and by at least [`MIN_DROP`]), its [`reclaimer`] task
//! waits for the burst of closes to settle and asks the allocator to give free memory back
//! ([`release`]): `mi_collect(true)` for mimalloc, `malloc_trim(0)` for glibc. At most once per
//! [`MIN_INTERVAL`] per executor, and never on the request path: counting is two `Cell` updates at
//! connect and close, the collect runs in its own task.
//!
//! **Purged pages must leave the resident set.** mimalloc's default on Linux commits its first
//! arena (1 GiB of address space) eagerly, and purging a page of an eagerly committed arena
//! *resets* it (`MADV_FREE`) instead of decommitting it (`MADV_DONTNEED`): the kernel takes such
//! pages back only under memory pressure, so the collect above freed the memory but `VmRSS` — what
//! operators and their alerts read — kept it. Measured with 5,000 idle Redis clients closing
//! (one executor, debug binary): 2.1–6.6 MiB of 19 MiB stayed resident with the default, 0.3–0.8
//! MiB with lazy arena commit, which also lowered the idle baseline (41 → 34 MiB) and the cost per
//! client (3.8 → 3.4 KiB). [`tune_allocator`] sets that option; the binary runs it as an ELF
//! constructor, before the first allocation reserves the arena.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

// libmimalloc-sys builds and links mimalloc; its Rust declaration of `mi_collect` sits behind a
// feature with an extra dependency, so it is declared here (`void mi_collect(bool force)`).
use libmimalloc_sys as _;

unsafe extern "C" {
    fn mi_collect(force: bool);
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
}

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_t` (v3 `mimalloc.h`).
const MI_OPTION_ARENA_EAGER_COMMIT: libc::c_int = 4;

/// Makes mimalloc commit its arenas lazily, so that purged pages are decommitted and leave the
/// resident set (see the module's documentation). Meant to run before the first allocation — the
/// binary registers it in `.init_array` — because the first arena is reserved then and keeps the
/// commit mode it was made with. An operator's `MIMALLOC_ARENA_EAGER_COMMIT` wins.
pub extern "C" fn tune_allocator() {
    // SAFETY: getenv reads the environment with a NUL-terminated name (no thread runs yet when
    // this is a constructor); mi_option_set takes plain values.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// Fewest connections closed since the peak that make a collect worth it.
pub const MIN_DROP: usize = 64;
/// Shortest time between two collects on one executor.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a sharp drop the collect waits (the rest of a burst of closes comes first).
pub const SETTLE: Duration = Duration::from_millis(200);

struct State {
    live: Cell<usize>,
    peak: Cell<usize>,
    running: Cell<bool>,
    wake: Rc<tokio::sync::Notify>,
}

thread_local! {
    static STATE: State = State {
        live: Cell::new(0),
        peak: Cell::new(0),
        running: Cell::new(false),
        wake: Rc::new(tokio::sync::Notify::new()),
    };
}

/// Collects done by all executors (for tests and diagnostics).
static COLLECTS: AtomicU64 = AtomicU64::new(0);

/// Collects done so far, process-wide.
pub fn collects() -> u64 {
    COLLECTS.load(Relaxed)
}

fn sharp(peak: usize, live: usize) -> bool {
    let dropped = peak.saturating_sub(live);
    dropped >= MIN_DROP && dropped.saturating_mul(4) >= peak
}

/// A connection opened on this executor.
#[inline]
pub fn opened() {
    STATE.with(|s| {
        let live = s.live.get() + 1;
        s.live.set(live);
        if live > s.peak.get() {
            s.peak.set(live);
        }
    });
}

/// A connection of this executor closed; wakes the reclaimer on a sharp drop.
#[inline]
pub fn closed() {
    STATE.with(|s| {
        let live = s.live.get().saturating_sub(1);
        s.live.set(live);
        if sharp(s.peak.get(), live) {
            s.wake.notify_one();
        }
    });
}

/// Asks the allocators to return free memory to the OS now: mimalloc's heap of this thread
/// (and, forced, its abandoned segments and caches), glibc's arenas. Whichever allocator is not
/// in use has nothing to give and returns at once.
pub fn release() {
    // SAFETY: mi_collect takes no pointers; it frees only memory no block lives in.
    unsafe { mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim returns only free pages of glibc's arenas to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
    COLLECTS.fetch_add(1, Relaxed);
}

/// Clears `running` when the reclaimer task ends (or is dropped with its executor).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| s.running.set(false));
    }
}

/// The executor's reclaimer: runs until the executor ends. Every accept loop spawns it
/// (`tokio::task::spawn_local`); on an executor that already runs one it returns at once.
pub async fn reclaimer() {
    let (wake, first) = STATE.with(|s| (s.wake.clone(), !s.running.replace(true)));
    if !first {
        return;
    }
    let _running = Running;
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        wake.notified().await;
        let wait = last.map_or(SETTLE, |l| {
            SETTLE.max(MIN_INTERVAL.saturating_sub(l.elapsed()))
        });
        tokio::time::sleep(wait).await;
        // A wake-up left over from before the last collect is not a new drop.
        let due = STATE.with(|s| sharp(s.peak.get(), s.live.get()));
        if !due {
            continue;
        }
        release();
        last = Some(tokio::time::Instant::now());
        STATE.with(|s| s.peak.set(s.live.get()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharp_drops_only() {
        assert!(!sharp(100, 90));
        assert!(sharp(100, 36));
        assert!(!sharp(200, 190));
        assert!(sharp(5000, 0));
        assert!(!sharp(63, 0), "fewer than MIN_DROP closed");
        assert!(!sharp(1000, 800), "a fifth is churn, not a drop");
    }

    #[test]
    fn a_drop_wakes_one_collect() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            tokio::task::spawn_local(reclaimer());
            tokio::task::yield_now().await;
            // A second reclaimer on the same executor ends at once.
            tokio::time::timeout(Duration::from_secs(1), reclaimer())
                .await
                .expect("second reclaimer returns");
            let before = collects();
            for _ in 0..200 {
                opened();
            }
            for _ in 0..50 {
                closed();
            }
            tokio::time::sleep(SETTLE * 3).await;
            assert_eq!(collects(), before, "a quarter is not reached");
            for _ in 0..150 {
                closed();
            }
            tokio::time::sleep(SETTLE * 3).await;
            assert!(collects() > before, "the drop was collected");
        });
    }
}
