//! Telling the server (and the console) how the flash goes: progress about
//! once a second, whose failures never stop the flash, and the one `done`
//! of the cycle, retried until the server acknowledges it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bty_proto::plan::{DoneReport, Phase, ProgressReport};

use crate::console::Console;
use crate::net::{backoff, describe};

/// Counters the pipeline bumps and the reporter reads.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes done in the current phase.
    pub bytes: AtomicU64,
    /// Total of the phase; 0 = unknown.
    pub total: AtomicU64,
    /// Bytes fetched from the network (compressed).
    pub fetched: Arc<AtomicU64>,
    phase: AtomicU8,
}

const PHASES: [Phase; 4] = [
    Phase::Preflight,
    Phase::Writing,
    Phase::Verifying,
    Phase::Finishing,
];

impl Progress {
    /// Current phase.
    pub fn phase(&self) -> Phase {
        // `phase` stores an index into PHASES (0 for one it does not know).
        let i = usize::from(self.phase.load(Ordering::Relaxed));
        PHASES.get(i).copied().unwrap_or(Phase::Preflight)
    }
}

/// Where reports go and with which token.
#[derive(Debug, Clone)]
pub struct Channel {
    /// Progress URL from the plan.
    pub progress: String,
    /// Done URL from the plan.
    pub done: String,
    /// Cycle token.
    pub token: String,
}

/// Posts progress in the background while a flash runs.
pub struct Reporter {
    http: ureq::Agent,
    channel: Channel,
    console: Console,
    /// The counters.
    pub progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
    wake: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    backoff_base: Duration,
}

fn human(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = "B";
    for u in ["KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

impl Reporter {
    /// Start the 1 Hz progress thread.
    pub fn start(
        http: ureq::Agent,
        channel: Channel,
        console: Console,
        backoff_base: Duration,
    ) -> Reporter {
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = {
            let (http, channel, console, progress, stop) = (
                http.clone(),
                channel.clone(),
                console.clone(),
                progress.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut last = (Instant::now(), 0u64, Phase::Other);
                let mut last_line = Instant::now() - Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) {
                    let phase = progress.phase();
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    let total = progress.total.load(Ordering::Relaxed);
                    let dt = last.0.elapsed().as_secs_f64();
                    let rate = (phase == last.2 && dt > 0.05)
                        .then(|| bytes.saturating_sub(last.1) as f64 / dt);
                    last = (Instant::now(), bytes, phase);
                    let report = ProgressReport {
                        token: channel.token.clone(),
                        bytes_done: bytes,
                        bytes_total: (total > 0).then_some(total),
                        phase,
                        rate,
                    };
                    // Never let a slow server slow the flash: short timeout,
                    // errors ignored.
                    let _ = http
                        .post(&channel.progress)
                        .timeout(Duration::from_secs(2))
                        .send_json(&report);
                    if last_line.elapsed() >= Duration::from_secs(5) && phase != Phase::Preflight {
                        last_line = Instant::now();
                        let pct = (bytes * 100)
                            .checked_div(total)
                            .map(|p| format!(" ({p}%)"))
                            .unwrap_or_default();
                        console.line(format!(
                            "{} {}{}{}{}",
                            phase.as_str(),
                            human(bytes),
                            if total > 0 {
                                format!(" of {}", human(total))
                            } else {
                                String::new()
                            },
                            pct,
                            rate.filter(|r| *r > 0.0)
                                .map(|r| format!(", {}/s", human(r as u64)))
                                .unwrap_or_default()
                        ));
                    }
                    let _ = rx.recv_timeout(Duration::from_secs(1));
                }
            })
        };
        Reporter {
            http,
            channel,
            console,
            progress,
            stop,
            wake: Some(tx),
            thread: Some(thread),
            backoff_base,
        }
    }

    /// Enter a phase with a (possibly unknown) total; posts at once.
    pub fn phase(&self, phase: Phase, total: Option<u64>) {
        let i = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        self.progress.bytes.store(0, Ordering::Relaxed);
        self.progress
            .total
            .store(total.unwrap_or(0), Ordering::Relaxed);
        self.progress.phase.store(i as u8, Ordering::Relaxed);
        if let Some(w) = &self.wake {
            let _ = w.send(());
        }
    }

    /// Stop the progress thread, then post `done` until the server
    /// acknowledges it: 2xx, or 409 (the cycle is gone; nothing to retry).
    pub fn done(self, report: &DoneReport) -> DoneOutcome {
        self.done_within(report, u32::MAX)
    }

    /// [`Reporter::done`] that gives up after `attempts` failed posts
    /// ([`DoneOutcome::GaveUp`]): a stick flash at a technician's console
    /// must not hang on a bty-web that went away.
    pub fn done_within(mut self, report: &DoneReport, attempts: u32) -> DoneOutcome {
        self.stop_progress();
        let mut attempt = 0;
        loop {
            match self
                .http
                .post(&self.channel.done)
                .timeout(Duration::from_secs(10))
                .send_json(report)
            {
                Ok(_) => return DoneOutcome::Acknowledged,
                Err(ureq::Error::Status(409, _)) => {
                    self.console.line(
                        "server says this flash cycle is no longer current (409); not retrying",
                    );
                    return DoneOutcome::CycleGone;
                }
                Err(e) if attempt + 1 >= attempts => {
                    self.console.line(format!(
                        "reporting done failed ({}); giving up",
                        describe(&e)
                    ));
                    return DoneOutcome::GaveUp(describe(&e));
                }
                Err(e) => {
                    let wait = backoff(attempt, self.backoff_base, Duration::from_secs(30));
                    self.console.line(format!(
                        "reporting done failed ({}); retrying in {:.1}s",
                        describe(&e),
                        wait.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    fn stop_progress(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop_progress();
    }
}

/// How a `done` post ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneOutcome {
    /// 2xx.
    Acknowledged,
    /// 409: the server no longer knows this cycle.
    CycleGone,
    /// [`Reporter::done_within`] ran out of attempts; the last error.
    GaveUp(String),
}
