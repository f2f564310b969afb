//! Issue 12, "The LAN is hostile": attacks on a real bty-web on port 0.
//! Its own test binary so the memory high-water mark it measures is its
//! own; the tests take turns (`SERIAL`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bty_testkit::web::{Web, MAC_HYP};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's peak resident set (VmHWM), in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak RSS growth allowed while 200 logins are refused.
const RSS_BOUND_MIB: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_parallel_wrong_logins_is_limited_before_argon2() {
    let _serial = SERIAL.lock().await;
    let hash = bty_auth::hash_password("the-right-one").unwrap();
    // The per-address connection cap (64) would refuse most of the burst
    // before the login limiter saw it: lift it to test the limiter.
    let web = Web::start(&format!(
        "[admin]\npassword_hash = {hash:?}\n[http]\nmax_connections_per_ip = 512\n"
    ))
    .await;
    let url = format!("http://{}/api/login", web.addr);
    let http = reqwest::Client::new();
    let before = vm_hwm_kib();
    let started = Instant::now();
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let r = http
                    .post(&url)
                    .json(&json!({"password": "wrong"}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in burst {
        statuses.push(t.await.unwrap());
    }
    let took = started.elapsed();
    let grown_mib = vm_hwm_kib().saturating_sub(before) / 1024;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    eprintln!("200 parallel wrong logins: {checked} checked (401), {limited} limited (429), {took:?}, peak RSS +{grown_mib} MiB");
    assert_eq!(limited + checked, 200, "{statuses:?}");
    assert!(
        checked <= 5,
        "only the limiter's 5 attempts may run argon2: {checked}"
    );
    assert!(
        grown_mib <= RSS_BOUND_MIB,
        "peak RSS grew by {grown_mib} MiB (bound {RSS_BOUND_MIB} MiB)"
    );
    // The right password from the same address is limited too: the burst
    // counted.
    let r = http
        .post(&url)
        .json(&json!({"password": "the-right-one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

/// Let this process hold a few thousand sockets (both ends are here).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 8192,
        "RLIMIT_NOFILE too low: {}",
        lim.rlim_cur
    );
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    tokio::time::timeout(Duration::from_secs(5), s.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// Whether the server has closed `s` (EOF or reset), asked of the kernel
/// (tokio's cached readiness may not have seen the FIN yet).
fn closed(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a peek into a local buffer on a socket we own.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn timed_get(url: &str) -> (u16, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let t = Instant::now();
    let r = http.get(url).send().await.unwrap();
    let st = r.status().as_u16();
    let _ = r.bytes().await.unwrap();
    (st, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_idle_connections_do_not_starve_healthz() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let web = Web::start("").await;
    let addr = web.addr;
    // 2 000 connections that never send a byte, from four addresses, 50
    // handshakes at a time (a bigger burst overflows the kernel's queues
    // and leaves half-open sockets the server never saw).
    let mut idle = Vec::new();
    for batch in 0..40 {
        let from = format!("127.0.0.{}", batch / 10 + 2);
        let conns: Vec<_> = (0..50)
            .map(|_| {
                let from = from.clone();
                tokio::spawn(async move { connect_from(&from, addr).await })
            })
            .collect();
        for c in conns {
            if let Ok(Ok(s)) = c.await {
                idle.push(s);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, healthz) = timed_get(&format!("http://{addr}/healthz")).await;
    assert_eq!(st, 200);
    let (st, pxe) = timed_get(&format!("http://{addr}/pxe/{MAC_HYP}")).await;
    assert_eq!(st, 200);
    // Handshakes the full accept queue held back complete late: give the
    // server a moment to accept (and cap) them all.
    let mut open = idle.len();
    for _ in 0..30 {
        open = idle.iter().filter(|s| !closed(s)).count();
        if open <= 4 * 64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} idle connections made, {open} still open; /healthz {healthz:?}, /pxe/{{mac}} {pxe:?}",
        idle.len()
    );
    assert!(healthz < Duration::from_secs(1), "{healthz:?}");
    assert!(pxe < Duration::from_secs(1), "{pxe:?}");
    // The per-address cap (64 by default) closed the rest.
    assert!(open <= 4 * 64, "{open} idle connections kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_that_never_ends_its_headers_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let web = Web::start("[http]\nheader_timeout_secs = 2\n").await;
    let mut s = connect_from("127.0.0.9", web.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut = None;
    while started.elapsed() < Duration::from_secs(8) {
        // One more header byte every 200 ms, never the blank line.
        if s.write_all(b"X").await.is_err() || closed(&s) {
            cut = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("slowloris cut off after {cut:?}");
    let cut = cut.expect("the slowloris client was never disconnected");
    assert!(cut < Duration::from_secs(4), "{cut:?}");
}
