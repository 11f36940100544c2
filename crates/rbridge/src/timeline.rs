//! Milestones of one call, logged at debug level: where the time of a slow pod start-up or
//! teardown went. Costs nothing unless the conflist asks for debug logging.

use std::time::{Duration, Instant};

use cni_plugin::log::Level;
use cni_plugin::Call;

pub struct Timeline {
    verb: &'static str,
    start: Instant,
    marks: Option<Vec<(&'static str, Duration)>>,
}

impl Timeline {
    pub fn new(call: &Call, verb: &'static str) -> Timeline {
        Timeline {
            verb,
            start: Instant::now(),
            marks: call.logger.enabled(Level::Debug).then(Vec::new),
        }
    }

    pub fn mark(&mut self, what: &'static str) {
        self.mark_at(what, Instant::now());
    }

    /// A milestone reached at `at` (by another thread, say).
    pub fn mark_at(&mut self, what: &'static str, at: Instant) {
        if let Some(marks) = &mut self.marks {
            marks.push((what, at.saturating_duration_since(self.start)));
        }
    }

    pub fn log(&mut self, call: &Call) {
        if let Some(marks) = &mut self.marks {
            marks.sort_by_key(|m| m.1);
            let text: Vec<String> = marks
                .iter()
                .map(|(what, at)| format!("{what}={:.3}ms", at.as_secs_f64() * 1e3))
                .collect();
            call.logger
                .debug(format!("{} timeline: {}", self.verb, text.join(" ")));
        }
    }
}
