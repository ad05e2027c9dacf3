//! Logging a condition once per change instead of once per round: with many
//! clusters whose members do not answer, a line per member per round buried
//! everything else (~80 000 lines in half an hour). The count stays in the
//! metrics; the log says when something started failing, that it still
//! fails every few minutes, and when it recovered.

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
}
