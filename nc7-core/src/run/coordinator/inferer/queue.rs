//! The queues between the inferer's stages: bounded by a number of iterations
//! (`prefetch_buffer_size`) and by the bytes of the tensors they hold ([`QUEUE_BYTES`]), so
//! that a deep queue smooths the stages' jitter on small batches without holding gigabytes of
//! large ones. A queue always takes one item, however large.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use burn::prelude::Backend;

use crate::nest::Nest;

/// The most tensor bytes one queue holds (when it holds more than one iteration).
pub(super) const QUEUE_BYTES: usize = 128 << 20;

/// The bytes of every tensor in `nest`.
pub(super) fn nest_bytes<B: Backend>(nest: &Nest<B>) -> usize {
    nest.flatten()
        .iter()
        .filter_map(|(_, v)| v.as_tensor())
        .map(|t| t.shape().num_elements() * t.dtype().size())
        .sum()
}

struct State<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    senders_gone: bool,
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    max_items: usize,
    max_bytes: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A stage that panicked holding the lock left the queue's state whole (no user code
        // runs under it): go on, the join reports the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end.
pub(super) struct Sender<T>(Arc<Shared<T>>);

/// The receiving end: an iterator that ends when the sender is gone and the queue empty.
pub(super) struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `max_items` items (at least one) and `max_bytes` bytes.
pub(super) fn queue<T>(max_items: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            senders_gone: false,
            receiver_gone: false,
        }),
        changed: Condvar::new(),
        max_items: max_items.max(1),
        max_bytes,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` of `bytes`, waiting for room; gives it back when the receiver is gone.
    pub(super) fn send(&self, item: T, bytes: usize) -> Result<(), T> {
        let s = &self.0;
        let mut state = s.lock();
        loop {
            if state.receiver_gone {
                return Err(item);
            }
            let room = state.items.is_empty()
                || (state.items.len() < s.max_items && state.bytes + bytes <= s.max_bytes);
            if room {
                break;
            }
            state = s.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.bytes += bytes;
        state.items.push_back((item, bytes));
        s.changed.notify_all();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().senders_gone = true;
        self.0.changed.notify_all();
    }
}

impl<T> Iterator for Receiver<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        let s = &self.0;
        let mut state = s.lock();
        loop {
            if let Some((item, bytes)) = state.items.pop_front() {
                state.bytes -= bytes;
                s.changed.notify_all();
                return Some(item);
            }
            if state.senders_gone {
                return None;
            }
            state = s.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.lock().receiver_gone = true;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_in_order_and_the_end_follows_the_sender() {
        let (tx, rx) = queue::<usize>(3, 100);
        let producer = std::thread::spawn(move || {
            for i in 0..50 {
                tx.send(i, 10).unwrap();
            }
        });
        let got: Vec<usize> = rx.collect();
        producer.join().unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn the_bytes_bound_the_queue_but_one_item_always_fits() {
        let (tx, rx) = queue::<usize>(10, 100);
        // One item larger than the bound goes in an empty queue.
        tx.send(0, 500).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let producer = std::thread::spawn(move || {
            tx.send(1, 60).unwrap();
            done_tx.send(()).unwrap();
            tx.send(2, 60).unwrap();
            tx.send(3, 30).unwrap();
        });
        // The second waits while the large one is queued.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(done_rx.try_recv().is_err(), "sent past the byte bound");
        let mut rx = rx;
        assert_eq!(rx.next(), Some(0));
        done_rx.recv().unwrap();
        assert_eq!(rx.collect::<Vec<_>>(), [1, 2, 3]);
        producer.join().unwrap();
    }

    #[test]
    fn a_receiver_that_is_gone_gives_the_item_back() {
        let (tx, rx) = queue::<usize>(1, 100);
        tx.send(1, 1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2, 1), Err(2));
    }
}
