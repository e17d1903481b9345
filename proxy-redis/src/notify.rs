//! A single-waiter wake-up flag for tasks on one core (no atomics, no syscalls).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one task that waits in [`LocalNotify::notified`]; a notification sent while nobody waits
/// is kept until the next wait.
#[derive(Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Sets the flag and wakes the waiter, if any.
    #[inline]
    pub fn notify(&self) {
        if self.flag.replace(true) {
            return;
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until notified (returns at once if a notification is pending), consuming it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { n: self }
    }
}

/// Future of [`LocalNotify::notified`].
pub struct Notified<'a> {
    n: &'a LocalNotify,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.flag.replace(false) {
            return Poll::Ready(());
        }
        let mut w = self.n.waker.borrow_mut();
        match w.as_ref() {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
