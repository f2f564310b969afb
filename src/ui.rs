//! Operator-facing output: numbered steps on stderr (stdout stays for data
//! such as `status --json`), counted from a list built before the first step.

use console::style;

/// Prints `[n/total] label` lines; the total is known up front.
pub struct Steps {
    total: usize,
    n: usize,
}

impl Steps {
    pub fn new(total: usize) -> Steps {
        Steps { total, n: 0 }
    }

    pub fn step(&mut self, label: impl AsRef<str>) {
        self.n += 1;
        eprintln!(
            "{} {}",
            style(format!("[{}/{}]", self.n, self.total)).bold().cyan(),
            label.as_ref()
        );
    }
}

/// An indented detail line under a step.
pub fn detail(s: impl AsRef<str>) {
    eprintln!("      {}", s.as_ref());
}

/// A warning line.
pub fn warn(s: impl AsRef<str>) {
    eprintln!("{} {}", style("warning:").yellow().bold(), s.as_ref());
}
