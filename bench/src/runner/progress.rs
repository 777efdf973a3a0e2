//! One status line on stderr, rewritten in place with `\r` while the suite runs.

use std::io::Write;
use std::time::{Duration, Instant};

/// The progress line.
pub struct Progress {
    started: Instant,
    width: usize,
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Progress {
        Progress {
            started: Instant::now(),
            width: 0,
        }
    }

    /// Replaces the line with `msg`, prefixed by the elapsed time.
    pub fn update(&mut self, msg: &str) {
        let line = format!("[{}] {msg}", fmt_duration(self.started.elapsed()));
        // Pad with spaces to erase the tail of a longer previous line (no terminal escapes, so
        // the output stays readable when stderr is a file).
        let pad = self.width.saturating_sub(line.chars().count());
        eprint!("\r{line}{:pad$}", "");
        let _ = std::io::stderr().flush();
        self.width = line.chars().count();
    }

    /// Ends the current line so that ordinary messages start on a fresh one.
    pub fn finish_line(&mut self) {
        if self.width > 0 {
            eprintln!();
            self.width = 0;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// `1m05s`, `12s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
