//! A statement timeout without a timer per statement.
//!
//! `tokio::time::timeout` makes a timer, registers it in the runtime's timer wheel on its first
//! poll and takes it out again when it is dropped: on a read/write-split listener, whose reads run
//! under `read_timeout_ms` (30 s unless configured), that cost ~750 instructions of a ~10k
//! instruction point select (callgrind, bench `sharding --callgrind`). [`StatementTimer`] keeps
//! one timer per session instead, and leaves it armed between statements: a statement that starts
//! while the timer is armed for an earlier deadline keeps it, and when it goes off before the
//! statement's own deadline it is moved to that deadline and waited for again. The timeout is
//! exact (a statement fails when its own deadline passes, never earlier), and a busy session
//! touches the timer wheel about once per timeout period rather than twice per statement. A
//! timer that goes off while its session is idle wakes the session's task once, for nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// One session's reusable statement timer (see the module documentation).
#[derive(Default)]
pub struct StatementTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StatementTimer {
    /// Runs `fut` to completion (`Some`) unless `deadline` passes first (`None`; `fut` is then
    /// dropped, as by `tokio::time::timeout`). `fut` is polled before the timer, so a reply that
    /// is already complete is taken even at the deadline.
    pub async fn run<F: Future>(
        &mut self,
        deadline: Instant,
        mut fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // An armed timer going off no later than `deadline` is kept: when it goes off early, the
        // statement is still running and the timer moves to `deadline` (below).
        if sleep.is_elapsed() || sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            while sleep.as_mut().poll(cx).is_ready() {
                if sleep.deadline() >= deadline {
                    return Poll::Ready(None);
                }
                // Armed for an earlier statement's deadline: wait on for this one's.
                sleep.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // Every future below ends on a timer of the same wheel as the deadline's, so the outcomes do
    // not depend on how busy the machine is (timers that are due together are seen together,
    // and the statement is polled first).

    #[test]
    fn finishes_before_the_deadline_and_times_out_after_it() {
        rt().block_on(async {
            let mut t = StatementTimer::default();
            let quick = t
                .run(
                    Instant::now() + ms(400),
                    std::pin::pin!(async {
                        tokio::time::sleep(ms(50)).await;
                        7
                    }),
                )
                .await;
            assert_eq!(quick, Some(7));
            let start = Instant::now();
            let slow = t
                .run(
                    start + ms(200),
                    std::pin::pin!(async {
                        tokio::time::sleep(ms(60_000)).await;
                    }),
                )
                .await;
            assert_eq!(slow, None);
            assert!(start.elapsed() >= ms(200), "{:?}", start.elapsed());
        });
    }

    #[test]
    fn a_timer_armed_for_an_earlier_statement_never_cuts_a_later_one_short() {
        rt().block_on(async {
            let mut t = StatementTimer::default();
            // Arms the timer for now + 300 ms, and finishes at once.
            assert_eq!(
                t.run(Instant::now() + ms(300), std::pin::pin!(async { 1 }))
                    .await,
                Some(1)
            );
            tokio::time::sleep(ms(100)).await;
            // Its own deadline is 300 ms after it starts; the armed timer goes off 100 ms before
            // that, while it runs.
            let start = Instant::now();
            let r = t
                .run(
                    start + ms(300),
                    std::pin::pin!(async {
                        tokio::time::sleep(ms(250)).await;
                        2
                    }),
                )
                .await;
            assert_eq!(r, Some(2));
            // A later statement with a shorter timeout than the armed one gets its own.
            let start = Instant::now();
            let r = t
                .run(
                    start + ms(100),
                    std::pin::pin!(async {
                        tokio::time::sleep(ms(60_000)).await;
                    }),
                )
                .await;
            assert_eq!(r, None);
            assert!(start.elapsed() >= ms(100), "{:?}", start.elapsed());
            // After the timer went off while nothing ran, a statement still gets its full time.
            tokio::time::sleep(ms(150)).await;
            let r = t
                .run(
                    Instant::now() + ms(200),
                    std::pin::pin!(async {
                        tokio::time::sleep(ms(150)).await;
                        3
                    }),
                )
                .await;
            assert_eq!(r, Some(3));
        });
    }
}
