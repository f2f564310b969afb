//! `--set-clock`: step the system clock to bty-web's `Date` header.
//!
//! The netboot environment has no NTP and no reason to trust the firmware's
//! RTC, but TLS, logs and the image's own first boot want a sane clock.
//! bty-web answers every request with a `Date` header (RFC 9110 §6.6.1), so
//! the agent takes it from the first successful (2xx) answer from bty-web
//! and, when the local clock is more than [`TOLERANCE`] off, sets
//! `CLOCK_REALTIME`. This replaces the `/init`'s `wget -S` step, which
//! crashed busybox. It runs once per agent start; a failure (no header, no
//! permission) is a console warning, never fatal: the flash does not need
//! the clock.
//!
//! [`ClockSync`] is a ureq middleware on the agent's one HTTP client, so
//! whichever request reaches bty-web first (the inventory post, normally)
//! carries the time, and nothing else in the agent changes. Answers from
//! other hosts (withcache, an image origin) are not trusted for the time.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::console::Console;

/// How far the local clock may be off before it is stepped. `Date` has
/// one-second resolution, so anything tighter would step a correct clock.
pub const TOLERANCE: Duration = Duration::from_secs(2);

/// What to do with the local clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the tolerance; leave it alone.
    Keep,
    /// Step it to `server` (it reads `local`).
    Step {
        server: SystemTime,
        local: SystemTime,
    },
}

/// Parse an HTTP `Date` value (IMF-fixdate, and the obsolete RFC 850 and
/// asctime forms a recipient must accept).
pub fn parse_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// Step the clock when `server` and `local` differ by more than `tolerance`
/// in either direction.
pub fn decide(server: SystemTime, local: SystemTime, tolerance: Duration) -> Decision {
    let off = match server.duration_since(local) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if off > tolerance {
        Decision::Step { server, local }
    } else {
        Decision::Keep
    }
}

/// Set `CLOCK_REALTIME` (needs CAP_SYS_TIME; the netboot agent runs as root).
pub fn set_realtime(t: SystemTime) -> io::Result<()> {
    let since = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time before 1970"))?;
    let ts = libc::timespec {
        tv_sec: since.as_secs() as libc::time_t,
        tv_nsec: since.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec that lives across the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A time for a console line; never panics (httpdate's formatter does for
/// times before 1970 or after 9999).
pub fn show(t: SystemTime) -> String {
    const Y10K: Duration = Duration::from_secs(253_402_300_799);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d <= Y10K => httpdate::fmt_http_date(t),
        Ok(d) => format!("{} s after 1970", d.as_secs()),
        Err(e) => format!("{} s before 1970", e.duration().as_secs()),
    }
}

type Setter = Box<dyn Fn(SystemTime) -> io::Result<()> + Send + Sync>;
type Now = Box<dyn Fn() -> SystemTime + Send + Sync>;

/// The middleware: sets the clock once, from bty-web's first 2xx answer.
pub struct ClockSync {
    server: String,
    console: Console,
    done: AtomicBool,
    set: Setter,
    now: Now,
}

impl ClockSync {
    /// Trust answers from URLs under `server` (`http://host:port`).
    pub fn new(server: &str, console: Console) -> ClockSync {
        ClockSync::with(
            server,
            console,
            Box::new(set_realtime),
            Box::new(SystemTime::now),
        )
    }

    /// Test seam: another clock to read and set.
    pub fn with(server: &str, console: Console, set: Setter, now: Now) -> ClockSync {
        ClockSync {
            server: server.trim_end_matches('/').to_string(),
            console,
            done: AtomicBool::new(false),
            set,
            now,
        }
    }

    /// Is `url` one of bty-web's? (`http://h:80` must not match
    /// `http://h:8080/...`.)
    fn is_server_url(&self, url: &str) -> bool {
        url.strip_prefix(&self.server)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Act on one answer's `Date` value (None: the header was missing).
    fn observe(&self, date: Option<&str>) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(server) = date.and_then(parse_date) else {
            self.console.line(format!(
                "warning: clock not set: bty-web's answer has no usable Date header ({:?})",
                date.unwrap_or("")
            ));
            return;
        };
        let local = (self.now)();
        if let Decision::Step { server, local } = decide(server, local, TOLERANCE) {
            match (self.set)(server) {
                Ok(()) => self.console.line(format!(
                    "clock set from server: {} (was {})",
                    show(server),
                    show(local)
                )),
                Err(e) => self.console.line(format!(
                    "warning: clock not set from server ({}): {e}",
                    show(server)
                )),
            }
        }
    }
}

impl ureq::Middleware for ClockSync {
    fn handle(
        &self,
        request: ureq::Request,
        next: ureq::MiddlewareNext,
    ) -> Result<ureq::Response, ureq::Error> {
        let ours = !self.done.load(Ordering::SeqCst) && self.is_server_url(request.url());
        let response = next.handle(request)?;
        if ours && (200..300).contains(&response.status()) {
            self.observe(response.header("Date"));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::sync::{Arc, Mutex};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn parses_the_three_http_date_forms_and_rejects_junk() {
        // 2001-02-03T04:05:06Z
        let t = at(981_173_106);
        assert_eq!(parse_date("Sat, 03 Feb 2001 04:05:06 GMT"), Some(t));
        assert_eq!(parse_date(" Sat, 03 Feb 2001 04:05:06 GMT "), Some(t));
        assert_eq!(parse_date("Saturday, 03-Feb-01 04:05:06 GMT"), Some(t));
        assert_eq!(parse_date("Sat Feb  3 04:05:06 2001"), Some(t));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("Sat, 03 Feb 2001 25:05:06 GMT"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn steps_only_beyond_the_tolerance_either_way() {
        let server = at(1_800_000_000);
        for local in [server, at(1_800_000_002), at(1_799_999_998)] {
            assert_eq!(
                decide(server, local, TOLERANCE),
                Decision::Keep,
                "{local:?}"
            );
        }
        for local in [at(1_800_000_003), at(1_799_999_997), at(0)] {
            assert_eq!(
                decide(server, local, TOLERANCE),
                Decision::Step { server, local }
            );
        }
    }

    #[test]
    fn shows_times_out_of_httpdate_range_without_panicking() {
        assert_eq!(show(at(981_173_106)), "Sat, 03 Feb 2001 04:05:06 GMT");
        assert!(show(UNIX_EPOCH - Duration::from_secs(5)).contains("before 1970"));
        assert!(show(at(300_000_000_000)).contains("after 1970"));
    }

    /// An HTTP server on 127.0.0.1 answering every request with `status`
    /// and `date` (None: no Date header), as many times as asked.
    fn server(status: u16, date: Option<&'static str>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let date = date.map(|d| format!("Date: {d}\r\n")).unwrap_or_default();
                let _ = c.write_all(
                    format!("HTTP/1.1 {status} X\r\n{date}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}")
                        .as_bytes(),
                );
            }
        });
        base
    }

    type Log = Arc<Mutex<Vec<SystemTime>>>;

    fn client(server: &str, local: SystemTime, fail: bool) -> (ureq::Agent, Log) {
        let log: Log = Arc::default();
        let l = log.clone();
        let sync = ClockSync::with(
            server,
            Console::default(),
            Box::new(move |t| {
                l.lock().unwrap().push(t);
                if fail {
                    Err(io::Error::from_raw_os_error(libc::EPERM))
                } else {
                    Ok(())
                }
            }),
            Box::new(move || local),
        );
        (ureq::AgentBuilder::new().middleware(sync).build(), log)
    }

    #[test]
    fn sets_once_from_the_first_2xx_answer_of_bty_web() {
        let web = server(200, Some("Sat, 03 Feb 2001 04:05:06 GMT"));
        let (http, log) = client(&web, at(1_800_000_000), false);
        http.get(&format!("{web}/pxe/x/plan")).call().unwrap();
        http.get(&format!("{web}/pxe/x/plan")).call().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![at(981_173_106)]);
    }

    #[test]
    fn ignores_errors_other_hosts_and_a_close_clock() {
        let date = Some("Sat, 03 Feb 2001 04:05:06 GMT");
        let (web404, other) = (server(404, date), server(200, date));
        let (http, log) = client(&web404, at(1_800_000_000), false);
        assert!(http.get(&format!("{web404}/pxe/x/plan")).call().is_err());
        http.get(&format!("{other}/img")).call().unwrap();
        assert!(log.lock().unwrap().is_empty(), "404 or another host set it");

        let web = server(200, date);
        let (http, log) = client(&web, at(981_173_107), false);
        http.get(&format!("{web}/healthz")).call().unwrap();
        assert!(
            log.lock().unwrap().is_empty(),
            "1 s off is within tolerance"
        );
    }

    #[test]
    fn a_missing_date_or_a_refused_set_is_not_fatal() {
        let web = server(200, None);
        let (http, log) = client(&web, at(0), false);
        http.get(&format!("{web}/healthz")).call().unwrap();
        assert!(log.lock().unwrap().is_empty());

        let web = server(200, Some("Sat, 03 Feb 2001 04:05:06 GMT"));
        let (http, log) = client(&web, at(0), true);
        http.get(&format!("{web}/healthz")).call().unwrap();
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[test]
    fn server_prefix_needs_a_path_boundary() {
        let s = ClockSync::with(
            "http://10.0.0.1:80/",
            Console::default(),
            Box::new(|_| Ok(())),
            Box::new(SystemTime::now),
        );
        assert!(s.is_server_url("http://10.0.0.1:80/pxe/x/plan"));
        assert!(s.is_server_url("http://10.0.0.1:80"));
        assert!(!s.is_server_url("http://10.0.0.1:8080/pxe/x/plan"));
    }
}
