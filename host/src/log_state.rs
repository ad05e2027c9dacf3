//! Logging a condition once per change instead of once per round: with many
//! clusters whose members do not answer, a line per member per round buried
//! everything else (~80 000 lines in half an hour). The count stays in the
//! metrics; the log says when something started failing, that it still
//! fails every few minutes, and when it recovered. Plugins' own log lines
//! go through a [`RepeatGate`]: the same line from the same plugin on the
//! same cluster is written once every few minutes, the repeats at debug.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a condition that keeps failing is logged again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(300);

/// One condition's failing/succeeding state.
#[derive(Debug, Default)]
pub struct LogState {
    /// Boxed: thousands of idle jobs each hold a few of these.
    failing: Option<Box<Failing>>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    last_logged: Instant,
    count: u64,
    /// The message without its digits: "next try in 3.2s" and "next try in
    /// 2.9s" are the same news.
    shape: String,
}

/// Remembers when each line was last written. Lines are compared whole:
/// unlike a failure's state, two lines that differ in a member's name or
/// port are different news.
#[derive(Debug, Default)]
pub struct RepeatGate {
    last: HashMap<String, Instant>,
}

/// Kinds of line a gate remembers; a plugin that logs more kinds than this
/// has the oldest forgotten (and written again when they recur).
const GATE_KINDS: usize = 64;

impl RepeatGate {
    /// Whether `message` is news: not written in the last [`REPEAT_EVERY`].
    pub fn admit(&mut self, message: &str) -> bool {
        self.admit_at(message, Instant::now())
    }

    fn admit_at(&mut self, message: &str, now: Instant) -> bool {
        let kind = message.to_string();
        if self
            .last
            .get(&kind)
            .is_some_and(|t| now.duration_since(*t) < REPEAT_EVERY)
        {
            return false;
        }
        if self.last.len() >= GATE_KINDS && !self.last.contains_key(&kind) {
            let oldest = self.last.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(kind, now);
        true
    }
}

fn shape(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl LogState {
    /// Records a failure; returns the line to log at warn when this one is
    /// news (it just started failing, the message changed, or it has been
    /// failing for another [`REPEAT_EVERY`]), `None` when it is only debug.
    pub fn failed(&mut self, message: &str) -> Option<String> {
        self.failed_at(message, Instant::now())
    }

    /// Records a success; returns what to log when it ends a failure.
    pub fn succeeded(&mut self) -> Option<String> {
        self.succeeded_at(Instant::now())
    }

    fn failed_at(&mut self, message: &str, now: Instant) -> Option<String> {
        let Some(f) = &mut self.failing else {
            self.failing = Some(Box::new(Failing {
                since: now,
                last_logged: now,
                count: 1,
                shape: shape(message),
            }));
            return Some(message.to_string());
        };
        f.count += 1;
        if f.shape != shape(message) {
            f.shape = shape(message);
            f.last_logged = now;
            return Some(message.to_string());
        }
        if now.duration_since(f.last_logged) >= REPEAT_EVERY {
            f.last_logged = now;
            let since = now.duration_since(f.since).as_secs();
            return Some(format!("{message} (still failing: {} times in {since} s)", f.count));
        }
        None
    }

    fn succeeded_at(&mut self, now: Instant) -> Option<String> {
        let f = self.failing.take()?;
        let lasted = now.duration_since(f.since).as_secs();
        Some(format!("after {} failures over {lasted} s", f.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_failure_is_logged_at_its_start_every_few_minutes_and_at_its_end() {
        let mut state = LogState::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(state.succeeded_at(at(0)), None, "nothing to say while all is well");
        // A failure every 10 s for 12 minutes: 72 rounds.
        let logged: Vec<String> = (0..72)
            .filter_map(|round| state.failed_at("unavailable: connection refused", at(round * 10)))
            .collect();
        assert_eq!(
            logged,
            [
                "unavailable: connection refused".to_string(),
                "unavailable: connection refused (still failing: 31 times in 300 s)".into(),
                "unavailable: connection refused (still failing: 61 times in 600 s)".into(),
            ]
        );
        let next = |state: &mut LogState, m: &str| state.failed_at(m, at(715));
        assert_eq!(
            next(&mut state, "timeout: no answer"),
            Some("timeout: no answer".into())
        );
        assert_eq!(next(&mut state, "timeout: no answer"), None);
        assert_eq!(
            next(&mut state, "timeout: no answer within 3s"),
            Some("timeout: no answer within 3s".into())
        );
        assert_eq!(
            next(&mut state, "timeout: no answer within 4s"),
            None,
            "only a number changed"
        );
        assert_eq!(state.succeeded_at(at(720)), Some("after 76 failures over 720 s".into()));
        assert_eq!(state.succeeded_at(at(730)), None);
    }

    #[test]
    fn a_repeated_plugin_line_is_written_every_few_minutes_and_a_new_one_at_once() {
        let mut gate = RepeatGate::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let member_down =
            |gate: &mut RepeatGate, s| gate.admit_at("member m1: connection refused (127.0.0.1:2379)", at(s));
        let written: Vec<u64> = (0..70)
            .map(|round| round * 10)
            .filter(|s| member_down(&mut gate, *s))
            .collect();
        assert_eq!(written, [0, 300, 600]);
        assert!(gate.admit_at("member m2: connection refused (127.0.0.1:2381)", at(601)));
        assert!(!gate.admit_at("member m2: connection refused (127.0.0.1:2381)", at(602)));
        // Bounded: many kinds of line push the oldest out, never grow the map.
        for i in 0..1000 {
            gate.admit_at(&format!("kind {}", "x".repeat(i % 100)), at(700));
        }
        assert!(gate.last.len() <= GATE_KINDS);
    }
}
