//! The wall time of each phase of a backup, for `ptrack backup --json` (issue 11 §3: where the
//! fixed cost of an incremental goes): a clock that records the time since its last lap under a
//! phase name.

use std::time::Instant;

use serde::Serialize;

/// One phase and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// What was done.
    pub name: &'static str,
    /// Seconds it took.
    pub seconds: f64,
}

/// Laps of one command.
#[derive(Debug)]
pub struct Clock {
    last: Instant,
    phases: Vec<Phase>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// Starts now.
    pub fn new() -> Clock {
        Clock {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Records the time since the last lap as `name` (added to an earlier lap of that name).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let s = (now - self.last).as_secs_f64();
        self.last = now;
        match self.phases.iter_mut().find(|p| p.name == name) {
            Some(p) => p.seconds += s,
            None => self.phases.push(Phase { name, seconds: s }),
        }
    }

    /// The phases so far, in order.
    pub fn phases(&self) -> Vec<Phase> {
        self.phases.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_by_name() {
        let mut c = Clock::new();
        c.lap("a");
        c.lap("b");
        c.lap("a");
        let p = c.phases();
        assert_eq!(p.iter().map(|x| x.name).collect::<Vec<_>>(), ["a", "b"]);
        assert!(p.iter().all(|x| x.seconds >= 0.0));
    }
}
