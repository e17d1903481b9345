//! A client's replies in the order of its commands.
//!
//! Every command of a client gets a sequence number. Backends deliver replies (from any backend
//! connection, in any order across shards) against that number; replies that complete the head of
//! the queue are copied straight into the client's output buffer, the others wait in their slot.
//! Split and fan-out commands hold a [`Merge`] slot that collects the parts.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use codec::resp::RespVersion;

use crate::notify::LocalNotify;
use router::redis::merge::{Merge, MergeKind};

/// The state a client session shares with the backend connections that answer it.
pub struct Client {
    /// The reply queue.
    pub q: RefCell<ReplyQueue>,
    /// Woken when bytes were added to the output (or other session events).
    pub wake: std::rc::Rc<LocalNotify>,
    /// What the spans of the connection share, with `[tracing]` (see `crate::trace`): the reply
    /// path makes the span of a command that was not head-sampled if it failed or was slow.
    pub trace: std::cell::OnceCell<std::rc::Rc<crate::trace::ConnTrace>>,
}

impl Client {
    /// A client speaking `version`.
    pub fn new(version: RespVersion) -> Self {
        Self {
            q: RefCell::new(ReplyQueue::new(version)),
            wake: std::rc::Rc::default(),
            trace: std::cell::OnceCell::new(),
        }
    }
}

/// One awaited reply.
enum Slot {
    /// Not answered yet.
    Pending,
    /// Not answered yet; the reply is dropped (CLIENT REPLY OFF / SKIP).
    Muted,
    /// Answered out of order; waits for the slots before it.
    Ready(Bytes),
    /// Collects the parts of a split or fan-out command (dropped when muted).
    Merge(Box<Merge>, bool),
}

/// Replies not yet written to the client, in command order.
pub struct ReplyQueue {
    /// Bytes ready to be written, in order.
    pub out: BytesMut,
    /// Sequence number of `slots[0]`.
    head: u64,
    slots: VecDeque<Slot>,
    /// The client's protocol (merged replies are encoded in it).
    pub version: RespVersion,
    /// Set when the session ended: deliveries are dropped.
    pub closed: bool,
    /// While set, the replies of the commands queued are dropped (CLIENT REPLY OFF / SKIP).
    pub muted: bool,
    /// Bytes of replies that arrived out of order and wait in their slots.
    held: usize,
    /// A decaying maximum of this client's reply sizes (what one more command may add).
    largest: usize,
}

impl ReplyQueue {
    fn new(version: RespVersion) -> Self {
        Self {
            // Grows with the first replies and keeps its size while the client is busy (an idle
            // client that got one short reply holds a few bytes, not 16 KiB: issue #23).
            out: BytesMut::new(),
            head: 0,
            slots: VecDeque::new(),
            version,
            closed: false,
            muted: false,
            held: 0,
            largest: 0,
        }
    }

    /// Reply bytes this client has not read yet: written to neither the socket nor the output,
    /// and in the output.
    pub fn unread(&self) -> usize {
        self.out.len() + self.held
    }

    /// A recent large reply size of this client (decays as smaller replies come).
    pub fn largest_reply(&self) -> usize {
        self.largest
    }

    fn note_size(&mut self, n: usize) {
        self.largest = n.max(self.largest - self.largest / 8);
    }

    /// Replies awaited (the pipeline depth).
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Reserves the slot of the next command and returns its sequence number.
    #[inline]
    pub fn push_pending(&mut self) -> u64 {
        self.slots.push_back(if self.muted {
            Slot::Muted
        } else {
            Slot::Pending
        });
        self.head + self.slots.len() as u64 - 1
    }

    /// Reserves a merge slot for a command split into `kind`'s parts.
    pub fn push_merge(&mut self, kind: MergeKind, parts: usize) -> u64 {
        self.slots
            .push_back(Slot::Merge(Box::new(Merge::new(kind, parts)), self.muted));
        self.head + self.slots.len() as u64 - 1
    }

    /// Adds a reply produced by the proxy itself, after every reply awaited before it.
    #[inline]
    pub fn push_local(&mut self, data: &[u8]) {
        if self.muted {
            return;
        }
        if self.slots.is_empty() {
            self.out.extend_from_slice(data);
        } else {
            self.held += data.len();
            self.slots
                .push_back(Slot::Ready(Bytes::copy_from_slice(data)));
        }
    }

    /// Delivers the whole reply of command `seq`.
    #[inline]
    pub fn deliver(&mut self, seq: u64, data: &[u8]) {
        if self.closed {
            return;
        }
        let Some(idx) = seq.checked_sub(self.head) else {
            return;
        };
        self.note_size(data.len());
        if idx == 0 {
            match self.slots.front() {
                Some(Slot::Pending) => self.out.extend_from_slice(data),
                Some(Slot::Muted) => {}
                _ => return,
            }
            self.slots.pop_front();
            self.head += 1;
            self.drain();
        } else if let Some(slot) = self.slots.get_mut(idx as usize) {
            match slot {
                Slot::Pending => {
                    *slot = Slot::Ready(Bytes::copy_from_slice(data));
                    self.held += data.len();
                }
                Slot::Muted => *slot = Slot::Ready(Bytes::new()),
                _ => {}
            }
        }
    }

    /// Delivers part `part` of a merged command `seq`.
    pub fn deliver_part(&mut self, seq: u64, part: u32, data: &[u8]) {
        if self.closed {
            return;
        }
        let Some(idx) = seq.checked_sub(self.head) else {
            return;
        };
        let version = self.version;
        let Some(Slot::Merge(m, muted)) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let muted = *muted;
        if let Some(done) = m.add(part, data, version) {
            let done = match done {
                _ if muted => Bytes::new(),
                Ok(reply) => reply,
                Err(e) => Bytes::from(crate::error::Error::Merge(e).reply()),
            };
            self.held += done.len();
            self.note_size(done.len());
            self.slots[idx as usize] = Slot::Ready(done); // ok: idx was checked by get_mut above
            if idx == 0 {
                self.drain();
            }
        }
    }

    /// Moves completed head slots into the output.
    fn drain(&mut self) {
        while let Some(Slot::Ready(_)) = self.slots.front() {
            if let Some(Slot::Ready(b)) = self.slots.pop_front() {
                self.held = self.held.saturating_sub(b.len());
                self.out.extend_from_slice(&b);
            }
            self.head += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_in_command_order() {
        let mut q = ReplyQueue::new(RespVersion::Resp2);
        let a = q.push_pending();
        let b = q.push_pending();
        q.push_local(b"+PONG\r\n");
        let c = q.push_pending();
        q.deliver(c, b":3\r\n");
        q.deliver(b, b":2\r\n");
        assert!(q.out.is_empty());
        q.deliver(a, b":1\r\n");
        assert_eq!(&q.out[..], b":1\r\n:2\r\n+PONG\r\n:3\r\n");
        assert_eq!(q.pending(), 0);
    }

    /// Issue #23 goal 3: a new client holds no reply buffer, and one that got a short reply
    /// holds a few bytes, not the 16 KiB it used to preallocate.
    #[test]
    fn an_idle_client_holds_a_small_reply_buffer() {
        let c = Client::new(RespVersion::Resp2);
        let mut q = c.q.borrow_mut();
        assert_eq!(q.out.capacity(), 0);
        let seq = q.push_pending();
        q.deliver(seq, b"+PONG\r\n");
        assert_eq!(&q.out[..], b"+PONG\r\n");
        q.out.clear();
        assert!(q.out.capacity() <= 64, "{}", q.out.capacity());
    }

    #[test]
    fn merge_slot_waits_for_all_parts() {
        let mut q = ReplyQueue::new(RespVersion::Resp2);
        let s = q.push_merge(MergeKind::Sum, 2);
        q.deliver_part(s, 1, b":2\r\n");
        assert!(q.out.is_empty());
        q.deliver_part(s, 0, b":5\r\n");
        assert_eq!(&q.out[..], b":7\r\n");
    }

    #[test]
    fn muted_replies_are_dropped_in_order() {
        let mut q = ReplyQueue::new(RespVersion::Resp2);
        let a = q.push_pending();
        q.muted = true;
        let b = q.push_pending();
        q.push_local(b"+OK\r\n");
        let m = q.push_merge(MergeKind::Sum, 1);
        q.muted = false;
        let c = q.push_pending();
        q.deliver(c, b":3\r\n");
        q.deliver_part(m, 0, b":9\r\n");
        q.deliver(b, b":2\r\n");
        assert!(q.out.is_empty());
        q.deliver(a, b":1\r\n");
        assert_eq!(&q.out[..], b":1\r\n:3\r\n");
        assert_eq!(q.pending(), 0);
    }
}
