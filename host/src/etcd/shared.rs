//! One member's Status answer shared between the plugin calls that ask for
//! it at about the same moment.
//!
//! A cluster's inspections start together (their rounds fall on one grid),
//! and `alarm`, `consistency`, `quota` and others each ask every member for
//! its Status within a few milliseconds. A caller may take an answer that
//! was *asked for* at or after `since`, the moment its own previous etcd
//! call returned (or its plugin call began): the caller observed nothing
//! between that moment and its own ask, so the answer is one it could have
//! got by asking. Orderings a plugin relies on are kept: `consistency`'s
//! second Status round bounds raft lag only because each of its readings
//! follows every reading of the first round, and a shared answer still does.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

/// Answers taken from another caller's ask, since the process started.
static SHARED: AtomicU64 = AtomicU64::new(0);

/// How many answers a caller took from another caller's ask (the
/// `etcd_inspector_etcd_answers_shared_total` counter).
pub fn answers_shared() -> u64 {
    SHARED.load(Ordering::Relaxed)
}

/// The latest ask of one call to one member, and its answer once it came.
struct Ask<T> {
    asked: Instant,
    answer: Option<(T, Instant)>,
}

/// One member's latest answer to one call, and the ask still on its way.
pub(super) struct SharedAnswer<T> {
    latest: watch::Sender<Option<Ask<T>>>,
}

impl<T> Default for SharedAnswer<T> {
    fn default() -> Self {
        SharedAnswer {
            latest: watch::Sender::new(None),
        }
    }
}

impl<T: Clone> SharedAnswer<T> {
    /// The answer of an ask made at or after `since` (one already in, one
    /// on its way, waited for, or `ask` run now), and when it came. That
    /// moment, not when this caller got to it, is what the caller's next
    /// `since` must follow: callers that share one answer then find each
    /// other's next asks fresh too, and go on sharing.
    pub async fn get(&self, since: Instant, ask: impl Future<Output = T>) -> (T, Instant) {
        let mut updates = self.latest.subscribe();
        loop {
            // Looked at in place: only a fresh answer is cloned.
            let fresh = match updates.borrow_and_update().as_ref() {
                Some(ask) if ask.asked >= since => Some(ask.answer.clone()),
                _ => None,
            };
            match fresh {
                Some(Some(answer)) => {
                    SHARED.fetch_add(1, Ordering::Relaxed);
                    return answer;
                }
                // On its way; a cancelled ask clears the slot, which wakes
                // us to ask ourselves.
                Some(None) if updates.changed().await.is_ok() => continue,
                _ => break,
            }
        }
        let asked = Instant::now();
        self.latest.send_replace(Some(Ask { asked, answer: None }));
        let mut pending = Pending {
            slot: self,
            asked,
            answered: false,
        };
        let answer = (ask.await, Instant::now());
        pending.answer(answer.clone());
        answer
    }
}

/// An ask in flight: answered, or (dropped unanswered) cleared, so that
/// callers waiting for it do not wait forever.
struct Pending<'a, T> {
    slot: &'a SharedAnswer<T>,
    asked: Instant,
    answered: bool,
}

impl<T> Pending<'_, T> {
    fn answer(&mut self, answer: (T, Instant)) {
        self.answered = true;
        let asked = self.asked;
        self.slot.latest.send_if_modified(|latest| match latest {
            // A later ask replaced ours: its callers wait for its answer.
            Some(ask) if ask.asked == asked => {
                ask.answer = Some(answer);
                true
            }
            _ => false,
        });
    }
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let asked = self.asked;
        self.slot.latest.send_if_modified(|latest| {
            let ours = latest.as_ref().is_some_and(|ask| ask.asked == asked);
            if ours {
                *latest = None;
            }
            ours
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[tokio::test]
    async fn an_answer_asked_for_after_since_is_shared_and_an_older_one_is_not() {
        let slot = SharedAnswer::default();
        let asks = AtomicU32::new(0);
        let ask = |value: u32| {
            let asks = &asks;
            async move {
                asks.fetch_add(1, Ordering::Relaxed);
                value
            }
        };
        let before = Instant::now();
        let (first, answered) = slot.get(before, ask(1)).await;
        assert_eq!(first, 1);
        // Asked after `before`: taken as it is, with when it came.
        assert_eq!(slot.get(before, ask(2)).await, (1, answered));
        // A caller whose previous call returned after that ask asks anew.
        let later = Instant::now();
        assert_eq!(slot.get(later, ask(3)).await.0, 3);
        assert_eq!(asks.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn callers_wait_for_an_ask_on_its_way_and_a_cancelled_one_does_not_hold_them() {
        let slot = SharedAnswer::default();
        let since = Instant::now();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = async {
            released.await.ok();
            7
        };
        let waiter = async {
            // Let the slow ask start first.
            tokio::task::yield_now().await;
            slot.get(since, async { 8 }).await.0
        };
        let (first, second, ()) = tokio::join!(async { slot.get(since, slow).await.0 }, waiter, async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            release.send(()).ok();
        });
        assert_eq!((first, second), (7, 7));

        // An ask dropped before its answer: the waiter asks itself.
        let since = Instant::now();
        let never = slot.get(since, std::future::pending::<u32>());
        let cancelled = tokio::time::timeout(Duration::from_millis(20), never);
        let waiter = async {
            tokio::task::yield_now().await;
            slot.get(since, async { 9 }).await.0
        };
        let (cancelled, waited) = tokio::join!(cancelled, waiter);
        assert!(cancelled.is_err());
        assert_eq!(waited, 9);
    }
}
