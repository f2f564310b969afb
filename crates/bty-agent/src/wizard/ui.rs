//! Talking to the technician on several terminals at once: every line goes
//! to all of them, and the answer is the first line typed on any of them.
//!
//! Line-based on purpose (numbered menus, "type the number", "type the
//! serial"): the kernel's line discipline edits and echoes each line on its
//! own terminal, which works the same on the VGA console and on a serial
//! line of any terminal type, with no curses, no terminfo and no raw mode
//! to restore if the agent dies. Reading `/dev/console` alone would not do:
//! it is only the last `console=` of the command line, so a technician at
//! the other one could watch but never answer. One reader thread per
//! terminal feeds one channel; a terminal that closes (EOF) drops out.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::disks::human;
use crate::local::Progress;

/// One output stream, and whether it wants CR LF (a terminal) or LF (a
/// pipe).
struct Out {
    w: Box<dyn Write + Send>,
    crlf: bool,
}

/// The technician's terminals.
pub struct Ui {
    outs: Vec<Out>,
    lines: Receiver<String>,
    /// A progress bar is on the current line (the next text starts anew).
    bar: bool,
    last_bar: Option<Instant>,
}

impl Ui {
    /// Talk over these streams: `inputs` are read line by line, each on its
    /// own thread; `outputs` are `(stream, crlf)`.
    pub fn new(
        inputs: Vec<Box<dyn Read + Send>>,
        outputs: Vec<(Box<dyn Write + Send>, bool)>,
    ) -> Ui {
        let (tx, rx) = channel();
        for input in inputs {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(input).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ui {
            outs: outputs
                .into_iter()
                .map(|(w, crlf)| Out { w, crlf })
                .collect(),
            lines: rx,
            bar: false,
            last_bar: None,
        }
    }

    /// stdin and stdout (tests, or a run by hand over ssh).
    pub fn stdio() -> Ui {
        Ui::new(
            vec![Box::new(std::io::stdin())],
            vec![(Box::new(std::io::stdout()), false)],
        )
    }

    /// Each terminal of `paths` that opens (the same device named twice
    /// counts once); fails when none does.
    pub fn terminals(paths: &[PathBuf]) -> Result<Ui> {
        let mut inputs: Vec<Box<dyn Read + Send>> = Vec::new();
        let mut outputs: Vec<(Box<dyn Write + Send>, bool)> = Vec::new();
        let mut seen = Vec::new();
        let mut failed = Vec::new();
        for p in paths {
            // O_NOCTTY: the agent must not become the terminal's controlling
            // process (a hangup on the serial line would then kill it).
            let open = |read: bool| {
                OpenOptions::new()
                    .read(read)
                    .write(!read)
                    .custom_flags(libc::O_NOCTTY)
                    .open(p)
            };
            match (open(true), open(false)) {
                (Ok(r), Ok(w)) => {
                    let rdev = r.metadata().map(|m| m.rdev()).unwrap_or(0);
                    if seen.contains(&rdev) {
                        continue;
                    }
                    seen.push(rdev);
                    inputs.push(Box::new(r));
                    outputs.push((Box::new(w) as Box<dyn Write + Send>, true));
                }
                (Err(e), _) | (_, Err(e)) => failed.push(format!("{}: {e}", p.display())),
            }
        }
        if inputs.is_empty() {
            bail!(
                "no terminal to talk on ({}); pass --tty or --stdio",
                failed.join("; ")
            );
        }
        Ok(Ui::new(inputs, outputs))
    }

    fn write_all(&mut self, text: &str) {
        for o in &mut self.outs {
            let t = if o.crlf {
                text.replace('\n', "\r\n")
            } else {
                text.to_string()
            };
            // A terminal that fails (unplugged serial adapter) must not stop
            // the others.
            let _ = o.w.write_all(t.as_bytes());
            let _ = o.w.flush();
        }
    }

    fn end_bar(&mut self) {
        if self.bar {
            self.bar = false;
            self.write_all("\n");
        }
    }

    /// One line of text (several if it has newlines).
    pub fn say(&mut self, text: impl AsRef<str>) {
        self.end_bar();
        self.write_all(&format!("{}\n", text.as_ref()));
    }

    /// Show `prompt` and wait for a line from any terminal; `None` once
    /// every terminal has closed.
    pub fn ask(&mut self, prompt: &str) -> Option<String> {
        self.end_bar();
        self.write_all(&format!("{prompt} "));
        let line = self.lines.recv().ok()?;
        // A pipe does not echo: keep the transcript readable.
        for o in &mut self.outs {
            if !o.crlf {
                let _ = writeln!(o.w, "{line}");
            }
        }
        Some(line.trim().to_string())
    }

    /// Wait up to `d` for a line (Enter) on any terminal: true when one
    /// came (and was taken), false when the time ran out or every
    /// terminal is closed (then after sleeping `d`, so a caller's polling
    /// loop keeps its pace).
    pub fn line_within(&mut self, d: Duration) -> bool {
        use std::sync::mpsc::RecvTimeoutError;
        let start = Instant::now();
        match self.lines.recv_timeout(d) {
            Ok(_) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(d.saturating_sub(start.elapsed()));
                false
            }
        }
    }

    /// Start a new progress display (one flash).
    pub fn start_progress(&mut self) {
        self.end_bar();
        self.last_bar = None;
    }

    /// Redraw the progress bar (at most twice a second, and always at the
    /// end) on the current line.
    pub fn progress(&mut self, p: &Progress) {
        if !p.writing {
            // Hashing the stored file and vetting the disk: one line, once.
            if self.last_bar.is_none() {
                self.last_bar = Some(Instant::now());
                self.say("checking the image's sha256 and the disk before writing");
            }
            return;
        }
        let done = p.total.is_some_and(|t| p.written >= t);
        if !done
            && self
                .last_bar
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_bar = Some(Instant::now());
        let text = bar(p);
        // Terminals redraw in place; a pipe gets one line per redraw.
        for o in &mut self.outs {
            let t = if o.crlf {
                format!("\r{text}\x1b[K")
            } else {
                format!("{text}\n")
            };
            let _ = o.w.write_all(t.as_bytes());
            let _ = o.w.flush();
        }
        self.bar = self.outs.iter().any(|o| o.crlf);
    }
}

/// `[#######-------------]  35%  700.0 MiB of 2.0 GiB  95.2 MiB/s  0:14 left`
pub fn bar(p: &Progress) -> String {
    let secs = p.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        p.written as f64 / secs
    } else {
        0.0
    };
    let rate_text = format!("{}/s", human(rate as u64));
    match p.total.filter(|t| *t > 0) {
        Some(total) => {
            let frac = (p.written as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (frac * 20.0).round() as usize;
            let left = if rate > 0.0 {
                let s = (total.saturating_sub(p.written) as f64 / rate).round() as u64;
                format!("{}:{:02} left", s / 60, s % 60)
            } else {
                "--:-- left".into()
            };
            format!(
                "[{}{}] {:3.0}%  {} of {}  {rate_text}  {left}",
                "#".repeat(filled),
                "-".repeat(20 - filled),
                frac * 100.0,
                human(p.written),
                human(total),
            )
        }
        None => format!("{} written  {rate_text}", human(p.written)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::FromRawFd;
    use std::sync::{Arc, Mutex};

    /// The reader side of a terminal, for tests: a pipe pair whose write end
    /// the test keeps.
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two valid descriptors on success.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are fresh and owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_goes_to_every_terminal_and_either_one_answers() {
        let (r1, mut w1) = pipe();
        let (r2, mut w2) = pipe();
        let (a, b) = (Shared::default(), Shared::default());
        let mut ui = Ui::new(
            vec![Box::new(r1), Box::new(r2)],
            vec![(Box::new(a.clone()), true), (Box::new(b.clone()), false)],
        );
        ui.say("hello\nworld");
        writeln!(w2, "  2 ").unwrap();
        assert_eq!(ui.ask("pick:").as_deref(), Some("2"));
        writeln!(w1, "from the first").unwrap();
        assert_eq!(ui.ask("again:").as_deref(), Some("from the first"));
        let a = String::from_utf8(a.0.lock().unwrap().clone()).unwrap();
        let b = String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert_eq!(a, "hello\r\nworld\r\npick: again: ");
        assert_eq!(b, "hello\nworld\npick:   2 \nagain: from the first\n");
        drop((w1, w2));
        assert_eq!(ui.ask("gone?"), None, "all terminals closed");
    }

    #[test]
    fn checking_is_said_once_then_the_bar_redraws_in_place() {
        let out = Shared::default();
        let mut ui = Ui::new(Vec::new(), vec![(Box::new(out.clone()), true)]);
        let p = |written, writing| Progress {
            written,
            total: Some(4 << 20),
            elapsed: Duration::from_secs(1),
            writing,
        };
        ui.start_progress();
        ui.progress(&p(0, false));
        ui.progress(&p(0, false));
        ui.progress(&p(4 << 20, true));
        ui.say("verified");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "checking the image's sha256 and the disk before writing\r\n\
             \r[####################] 100%  4.0 MiB of 4.0 MiB  4.0 MiB/s  0:00 left\x1b[K\r\n\
             verified\r\n"
        );
    }

    #[test]
    fn the_bar_shows_bytes_rate_and_time_left() {
        let p = Progress {
            written: 512 << 20,
            total: Some(2 << 30),
            elapsed: Duration::from_secs(4),
            writing: true,
        };
        assert_eq!(
            bar(&p),
            "[#####---------------]  25%  512.0 MiB of 2.0 GiB  128.0 MiB/s  0:12 left"
        );
        let p = Progress {
            written: 1 << 20,
            total: None,
            elapsed: Duration::from_secs(1),
            writing: true,
        };
        assert_eq!(bar(&p), "1.0 MiB written  1.0 MiB/s");
    }
}
