//! The Secure Boot relay against real components: bty-tftp in-process,
//! a real HTTP server on loopback standing in for bty-web (axum; it
//! records the headers it got and injects faults by name), and real TFTP
//! clients (atftp, tftp-hpa) plus a raw-UDP client for what they cannot
//! do (bind a chosen source address, stop ACKing). No traffic leaves
//! loopback.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bty_tftp::packet::Packet;
use common::{atftp, have, random_bytes, text, tftp_hpa, Raw, Runtime, Server};
use futures::StreamExt;

const KEY: &str = "relay-test-key-0123456789";
const SMALL: &[u8] = b"set timeout=0\nsource $prefix/grub.cfg-$net_default_mac\nreboot\n";
const BIG_LEN: usize = 30 * 1024 * 1024 + 333;

/// What the stand-in bty-web saw and holds.
#[derive(Default)]
struct Web {
    /// Path and headers of every request.
    seen: Mutex<Vec<(String, HeaderMap)>>,
    big: Bytes,
    /// Bodies of "held" answers dropped by the server (the connection
    /// went away).
    dropped: AtomicUsize,
}

/// Sets `dropped` when the body stream it lives in is dropped.
struct DropFlag(Arc<Web>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json_value(msg))).into_response()
}

fn serde_json_value(msg: &str) -> std::collections::HashMap<&'static str, String> {
    [("error", msg.to_string())].into_iter().collect()
}

/// A body of `len` announced bytes of which `send` are sent, then a
/// pause (so hyper flushes them), then the end (hyper then closes the
/// connection: the body is cut) or nothing more for ever.
fn partial(web: Arc<Web>, len: usize, send: usize, hang: bool) -> Response {
    let flag = DropFlag(web);
    let chunks = futures::stream::iter((0..send).step_by(8192).map(move |i| {
        let n = 8192.min(send - i);
        Ok::<_, std::io::Error>(Bytes::from(vec![7u8; n]))
    }));
    let pause = futures::stream::once(tokio::time::sleep(Duration::from_millis(300)))
        .filter_map(|()| async { None });
    let tail: futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>> = if hang {
        Box::pin(futures::stream::pending())
    } else {
        Box::pin(pause)
    };
    let body = chunks.chain(tail).map(move |c| {
        let _keep = &flag;
        c
    });
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(body))
        .unwrap()
}

/// A body that keeps coming (8 KiB every 5 ms) under a 1 GB length:
/// dropped by the server only when the connection goes away. (A finite
/// body could fit in the socket buffers and end normally even with the
/// connection leaked.)
fn endless(web: Arc<Web>) -> Response {
    let flag = DropFlag(web);
    let body = futures::stream::unfold(flag, |flag| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(vec![9u8; 8192])), flag))
    });
    Response::builder()
        .header(header::CONTENT_LENGTH, 1_000_000_000u64)
        .body(Body::from_stream(body))
        .unwrap()
}

async fn grub(
    State(web): State<Arc<Web>>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    web.seen
        .lock()
        .unwrap()
        .push((format!("grub/{rest}"), headers.clone()));
    match rest.as_str() {
        "grub.cfg" | "grub.cfg-52:54:00:12:34:56" => SMALL.into_response(),
        "big" => web.big.clone().into_response(),
        "missing" => json_error(
            StatusCode::NOT_FOUND,
            "no machine 52:54:00:12:34:56 is known",
        ),
        "forbidden" => json_error(StatusCode::FORBIDDEN, "wrong relay key"),
        "teapot" => (StatusCode::INTERNAL_SERVER_ERROR, "database is locked").into_response(),
        "long-404" => json_error(StatusCode::NOT_FOUND, &"x".repeat(5000)),
        "short" => partial(web.clone(), 100_000, 50_000, false),
        "stall" => partial(web.clone(), 100_000, 10_000, true),
        "held" => endless(web.clone()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            SMALL.into_response()
        }
        "no-length" => {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
            Body::from_stream(body).into_response()
        }
        _ => json_error(StatusCode::NOT_FOUND, "unknown test name"),
    }
}

/// The stand-in bty-web on 127.0.0.1, on its own runtime thread.
struct WebServer {
    addr: SocketAddr,
    web: Arc<Web>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl WebServer {
    fn start() -> WebServer {
        let web = Arc::new(Web {
            big: Bytes::from(random_bytes(BIG_LEN, 42)),
            ..Web::default()
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = web.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/grub/{*rest}", axum::routing::get(grub))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        WebServer {
            addr,
            web,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Headers of the last request for `name`.
    fn last(&self, name: &str) -> HeaderMap {
        let seen = self.web.seen.lock().unwrap();
        seen.iter()
            .rev()
            .find(|(p, _)| p == name)
            .unwrap_or_else(|| panic!("bty-web never got {name}; got {seen:?}"))
            .1
            .clone()
    }

    fn requests(&self, name: &str) -> usize {
        let seen = self.web.seen.lock().unwrap();
        seen.iter().filter(|(p, _)| p == name).count()
    }
}

/// bty-tftp on `v4` (and [::1]) relaying to `relay` with `KEY`, on one
/// thread as the binary runs.
fn start_tftp(
    v4: &str,
    relay: Option<&str>,
    configure: impl FnOnce(&mut bty_tftp::Options),
) -> Server {
    Server::start_with(v4.parse().unwrap(), Runtime::CurrentThread, |opts| {
        opts.relay = relay.map(|url| bty_tftp::Relay::new(url, KEY).unwrap());
        configure(opts);
    })
}

/// bty-tftp on 127.0.0.1 relaying to `web`, the relay's settings as
/// `tune` leaves them.
fn start_tuned(web: &WebServer, tune: impl FnOnce(&mut bty_tftp::Relay)) -> Server {
    start_tftp("127.0.0.1:0", Some(&web.url()), |o| {
        if let Some(r) = &mut o.relay {
            tune(r);
        }
    })
}

/// A raw-UDP client on `bind` that waits 5 s for each reply (a relayed
/// reply waits on bty-web too).
fn raw(bind: &str, server: SocketAddr) -> Raw {
    Raw::bind(bind, server, Duration::from_secs(5))
}

#[test]
fn relayed_bytes_are_identical_small_and_30_mb_with_windows_and_the_grub_way() {
    if !have("atftp") {
        return;
    }
    let web = WebServer::start();
    let tftp = start_tftp("127.0.0.1:0", Some(&web.url()), |_| {});
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("got");
    for (name, want) in [("grub/grub.cfg", SMALL), ("/grub/big", &web.web.big[..])] {
        // atftp with a large window; GRUB's own way: blksize 1024 and tsize,
        // lock-step.
        for options in [
            &["blksize 1468", "windowsize 16", "tsize 0"][..],
            &["blksize 1024", "tsize 0"][..],
        ] {
            let _ = std::fs::remove_file(&local);
            let started = Instant::now();
            let o = atftp(tftp.v4, name, &local, options);
            assert!(o.status.success(), "{name} {options:?}: {}", text(&o));
            let got = std::fs::read(&local).unwrap();
            assert!(
                got == want,
                "{name} {options:?}: {} bytes, want {}",
                got.len(),
                want.len()
            );
            eprintln!(
                "{name} {options:?}: {} bytes in {:?}",
                got.len(),
                started.elapsed()
            );
        }
    }
    if have("tftp") {
        // (tftp-hpa reads `a:b` as HOST:FILE, so not a per-MAC name.)
        let o = tftp_hpa(
            tftp.v4,
            "binary",
            &format!("get grub/grub.cfg {}", local.display()),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(&local).unwrap(), SMALL);
    }
    let h = web.last("grub/big");
    assert!(h[header::USER_AGENT]
        .to_str()
        .unwrap()
        .starts_with("bty-tftp/"));
}

/// `c` fetches `name` whole, and bty-web got it relayed for `client`,
/// addressed to `host` (with bty-web's port), with the key.
#[track_caller]
fn assert_relayed(web: &WebServer, c: &Raw, name: &str, client: &str, host: &str) {
    assert_eq!(c.fetch(name).unwrap(), SMALL);
    let h = web.last(name);
    assert_eq!(h["x-bty-relay-client"], client);
    assert_eq!(
        h[header::HOST],
        format!("{host}:{}", web.addr.port()).as_str()
    );
    assert_eq!(h["x-bty-relay-key"], KEY);
}

#[test]
fn headers_name_the_client_the_local_address_and_the_key() {
    let web = WebServer::start();
    // Listening on every address: the Host must come from the address the
    // request was sent to (IP_PKTINFO), not from the relay URL.
    let tftp = start_tftp("0.0.0.0:0", Some(&web.url()), |_| {});
    let to: SocketAddr = format!("127.0.0.2:{}", tftp.v4.port()).parse().unwrap();
    let c = raw("127.0.0.3:0", to);
    assert_relayed(&web, &c, "grub/grub.cfg", "127.0.0.3", "127.0.0.2");
    // Over IPv6 the Host carries brackets.
    if let Some(v6) = tftp.v6 {
        let c = raw("[::1]:0", v6);
        assert_relayed(&web, &c, "grub/grub.cfg-52:54:00:12:34:56", "::1", "[::1]");
    } else {
        eprintln!("skipping IPv6: [::1] cannot be bound here");
    }
}

#[test]
fn bty_web_errors_become_tftp_errors_with_its_message() {
    let web = WebServer::start();
    let tftp = start_tftp("127.0.0.1:0", Some(&web.url()), |_| {});
    let c = raw("127.0.0.1:0", tftp.v4);
    assert_eq!(
        c.fetch("grub/missing").unwrap_err(),
        (1, "no machine 52:54:00:12:34:56 is known".to_string())
    );
    assert_eq!(
        c.fetch("grub/forbidden").unwrap_err(),
        (2, "wrong relay key".to_string())
    );
    assert_eq!(
        c.fetch("grub/teapot").unwrap_err(),
        (
            0,
            "bty-web answered 500 Internal Server Error: database is locked".to_string()
        )
    );
    let (code, msg) = c.fetch("grub/long-404").unwrap_err();
    assert_eq!(code, 1);
    assert!(msg.len() <= 200 && msg.ends_with("..."), "{}", msg.len());
    let (code, msg) = c.fetch("grub/no-length").unwrap_err();
    assert_eq!(code, 0);
    assert!(msg.contains("Content-Length"), "{msg}");
    // A name that would leave /grub/ once the URL is resolved is refused
    // here and never reaches bty-web.
    let (code, _) = c.fetch("grub/../etc/passwd").unwrap_err();
    assert_eq!(code, 2);
    assert_eq!(
        web.web
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| !p.starts_with("grub/"))
            .count(),
        0
    );
    // atftp reports them as such.
    if have("atftp") {
        let out = tempfile::tempdir().unwrap();
        let o = atftp(tftp.v4, "grub/missing", &out.path().join("x"), &[]);
        assert!(!o.status.success());
        assert!(text(&o).contains("no machine"), "{}", text(&o));
    }
}

#[test]
fn bty_web_down_is_an_error_and_the_next_request_is_served() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let tftp = start_tftp("127.0.0.1:0", Some(&url), |_| {});
    tftp.write("undionly.kpxe", b"bootfile");
    let c = raw("127.0.0.1:0", tftp.v4);
    let (code, msg) = c.fetch("grub/grub.cfg").unwrap_err();
    assert_eq!(code, 0);
    assert!(
        msg.starts_with(&format!("bty-web at {url} unreachable: ")),
        "{msg}"
    );
    assert!(msg.contains("Connection refused"), "{msg}");
    assert_eq!(c.fetch("undionly.kpxe").unwrap(), b"bootfile");
    let (code, _) = c.fetch("grub/grub.cfg").unwrap_err();
    assert_eq!(code, 0);
}

#[test]
fn a_cut_or_stalled_body_fails_the_transfer() {
    let web = WebServer::start();
    let tftp = start_tuned(&web, |r| r.stall_timeout = Duration::from_secs(1));
    let c = raw("127.0.0.1:0", tftp.v4);
    let (code, msg) = c.fetch("grub/short").unwrap_err();
    assert_eq!(code, 0);
    assert!(msg.contains("bty-web's answer"), "{msg}");
    eprintln!("cut body: {msg}");
    let started = Instant::now();
    let (code, msg) = c.fetch("grub/stall").unwrap_err();
    assert_eq!(code, 0);
    assert!(msg.contains("no data for"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A real client does not keep a short file as if it were whole.
    if have("atftp") {
        let out = tempfile::tempdir().unwrap();
        let o = atftp(
            tftp.v4,
            "grub/short",
            &out.path().join("x"),
            &["blksize 1468", "tsize 0"],
        );
        assert!(!o.status.success(), "{}", text(&o));
    }
}

#[test]
fn a_slow_bty_web_is_bounded_by_the_header_timeout() {
    let web = WebServer::start();
    let tftp = start_tuned(&web, |r| r.header_timeout = Duration::from_secs(1));
    tftp.write("f", b"still here");
    let c = raw("127.0.0.1:0", tftp.v4);
    let started = Instant::now();
    let (code, msg) = c.fetch("grub/slow").unwrap_err();
    let took = started.elapsed();
    assert_eq!(code, 0);
    assert!(msg.contains("unreachable: no answer within 1s"), "{msg}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(c.fetch("f").unwrap(), b"still here");
}

#[test]
fn other_names_come_from_the_root_and_without_a_relay_grub_does_too() {
    let web = WebServer::start();
    let tftp = start_tftp("127.0.0.1:0", Some(&web.url()), |_| {});
    tftp.write("grubx64.efi", b"signed grub");
    tftp.write("grub/grub.cfg", b"the root's copy");
    let c = raw("127.0.0.1:0", tftp.v4);
    assert_eq!(c.fetch("grubx64.efi").unwrap(), b"signed grub");
    assert_eq!(c.fetch("/grub/grub.cfg").unwrap(), SMALL);
    assert_eq!(web.requests("grub/grubx64.efi"), 0);
    assert_eq!(web.requests("grub/grub.cfg"), 1);
    drop(tftp);
    let plain = start_tftp("127.0.0.1:0", None, |_| {});
    plain.write("grub/grub.cfg", b"the root's copy");
    let c = raw("127.0.0.1:0", plain.v4);
    assert_eq!(c.fetch("grub/grub.cfg").unwrap(), b"the root's copy");
    assert_eq!(c.fetch("grub/missing").unwrap_err().0, 1);
    assert_eq!(web.requests("grub/grub.cfg"), 1);
}

#[test]
fn a_client_that_stops_acking_releases_the_http_connection() {
    let web = WebServer::start();
    let tftp = start_tftp("127.0.0.1:0", Some(&web.url()), |o| {
        o.timeout = Duration::from_millis(200);
        o.retries = 2;
    });
    let c = raw("127.0.0.1:0", tftp.v4);
    c.rrq("grub/held", &[("blksize", "1468"), ("windowsize", "4")]);
    // Take the OACK and the first window, then go silent.
    let (oack, tid) = c.recv_packet();
    assert!(matches!(oack, Packet::Oack(_)), "{oack:?}");
    c.ack(tid, 0);
    let started = Instant::now();
    let message = loop {
        match c.recv_packet().0 {
            Packet::Data { .. } => {}
            Packet::Error { message, .. } => break message,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(message.contains("timed out"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // bty-web's side of the connection sees it closed: the body it was
    // sending is dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while web.web.dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the HTTP response is still held open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_binary_streams_four_30_mb_transfers_in_bounded_memory() {
    if !have("atftp") {
        return;
    }
    let web = WebServer::start();
    let root = tempfile::tempdir().unwrap();
    let key_file = root.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // A free port (the binary prints none): bound, then released.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bty-tftp"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--root")
        .arg(root.path())
        .arg("--relay")
        .arg(web.url())
        .arg("--relay-key-file")
        .arg(&key_file)
        .env_remove("BTY_TFTP_RELAY_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = tempfile::tempdir().unwrap();
    let fetches: Vec<_> = (0..4)
        .map(|i| {
            let local = out.path().join(format!("big{i}"));
            std::thread::spawn(move || {
                let o = atftp(
                    addr,
                    "grub/big",
                    &local,
                    &["blksize 1468", "windowsize 16", "tsize 0"],
                );
                (o, local)
            })
        })
        .collect();
    for f in fetches {
        let (o, local) = f.join().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(std::fs::read(&local).unwrap() == web.web.big[..]);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(log.matches("http_status=200").count(), 4, "{log}");
    eprintln!("bty-tftp peak RSS after 4 × {BIG_LEN} bytes relayed at once: {peak_kb} kB");
    // Buffering the bodies would take over 120 MB.
    assert!(peak_kb < 40 * 1024, "peak RSS {peak_kb} kB");
}
