//! The harness both integration test files share: bty-tftp in-process on
//! loopback, the gate for external tools, the real-client wrappers and a
//! raw-UDP client for what the real clients cannot do.

// Each test binary compiles this module on its own and uses only part of
// it; what one of them leaves unused is not dead.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bty_tftp::packet::{self, Packet, OP_RRQ};

/// The tokio runtime the in-process server runs on.
pub enum Runtime {
    /// One thread, as the bty-tftp binary runs.
    CurrentThread,
    /// A multi-thread runtime with this many workers.
    Workers(usize),
}

/// A running server with its root.
pub struct Server {
    pub v4: SocketAddr,
    pub v6: Option<SocketAddr>,
    pub root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// A server on 127.0.0.1 (and [::1]) on a 2-worker runtime.
    pub fn start(configure: impl FnOnce(&mut bty_tftp::Options)) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), configure)
    }

    /// A server on `v4` (and [::1]) on a 2-worker runtime.
    pub fn start_on(v4: SocketAddr, configure: impl FnOnce(&mut bty_tftp::Options)) -> Server {
        Server::start_with(v4, Runtime::Workers(2), configure)
    }

    /// A server on `v4` (and [::1]) on `runtime`, with the options
    /// `configure` leaves.
    pub fn start_with(
        v4: SocketAddr,
        runtime: Runtime,
        configure: impl FnOnce(&mut bty_tftp::Options),
    ) -> Server {
        let root = tempfile::tempdir().unwrap();
        let mut opts = bty_tftp::Options::new(root.path());
        // Long enough that a loaded CI machine does not trigger resends in
        // tests that do not test them.
        opts.timeout = Duration::from_secs(2);
        configure(&mut opts);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match runtime {
                Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
                Runtime::Workers(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            }
            .enable_all()
            .build()
            .unwrap();
            rt.block_on(async move {
                let mut sockets = vec![bty_tftp::bind(v4).unwrap()];
                // [::1] may be missing in some sandboxes; IPv6 tests then
                // report that instead of failing everything.
                if let Ok(s) = bty_tftp::bind("[::1]:0".parse().unwrap()) {
                    sockets.push(s);
                }
                let addrs: Vec<SocketAddr> =
                    sockets.iter().map(|s| s.local_addr().unwrap()).collect();
                addr_tx.send(addrs).unwrap();
                bty_tftp::serve_many(opts, sockets, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addrs = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Server {
            v4: addrs[0],
            v6: addrs.get(1).copied(),
            root,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where `name` lives under the root.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Puts `data` at `name` under the root (making its directories) and
    /// returns it, for comparing with what a client got.
    pub fn write(&self, name: &str, data: &[u8]) -> Vec<u8> {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        data.to_vec()
    }

    /// The address a client should use for `v6`.
    pub fn addr(&self, v6: bool) -> SocketAddr {
        if v6 {
            self.v6.expect("[::1] is not available")
        } else {
            self.v4
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// External tool gate: fail under BTY_REQUIRE_TOOLS=1, otherwise skip.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{tool} is required (BTY_REQUIRE_TOOLS=1): apt-get install -y atftp tftp-hpa");
        }
        eprintln!("skipping: {tool} not installed");
    }
    found
}

/// `len` bytes that depend on `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, incompressible enough to catch misordering.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// atftp fetches `remote` from `addr` into `local` with these `--option`s.
pub fn atftp(addr: SocketAddr, remote: &str, local: &Path, options: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("120").arg("atftp");
    for o in options {
        cmd.arg("--option").arg(o);
    }
    cmd.arg("--get")
        .arg("-r")
        .arg(remote)
        .arg("-l")
        .arg(local)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    cmd.output().unwrap()
}

/// tftp-hpa runs `command` (words split on spaces) against `addr` in `mode`.
pub fn tftp_hpa(addr: SocketAddr, mode: &str, command: &str) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("tftp")
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("-m")
        .arg(mode)
        .arg("-c")
        .args(command.split(' '))
        .output()
        .unwrap()
}

/// A tool's stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A raw-UDP TFTP client.
pub struct Raw {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    /// How long each receive waits.
    wait: Duration,
}

impl Raw {
    /// A client on the loopback address of `server`'s family, waiting 3 s
    /// for each reply.
    pub fn new(server: SocketAddr) -> Raw {
        let bind = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        Raw::bind(bind, server, Duration::from_secs(3))
    }

    /// A client on `bind`, waiting `wait` for each reply.
    pub fn bind(bind: &str, server: SocketAddr, wait: Duration) -> Raw {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(wait)).unwrap();
        Raw { sock, server, wait }
    }

    pub fn send(&self, buf: &[u8]) {
        self.sock.send_to(buf, self.server).unwrap();
    }

    /// Sends an octet-mode RRQ for `name` with `options`.
    pub fn rrq(&self, name: &str, options: &[(&str, &str)]) {
        self.send(&packet::request(OP_RRQ, name, "octet", options));
    }

    /// The next datagram and its sender, or None when none came in time.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 70000];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((buf[..n].to_vec(), from)),
            Err(_) => None,
        }
    }

    /// The next datagram, parsed; panics when none comes.
    pub fn recv_packet(&self) -> (Packet<'static>, SocketAddr) {
        let (buf, from) = self.recv().expect("no reply");
        // Leaked so the packet can borrow from it: a test's worth of
        // datagrams is small.
        let buf: &'static [u8] = Box::leak(buf.into_boxed_slice());
        (packet::parse(buf).unwrap(), from)
    }

    /// Like `recv`, waiting `t` this once.
    pub fn recv_within(&self, t: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.sock.set_read_timeout(Some(t)).unwrap();
        let r = self.recv();
        self.sock.set_read_timeout(Some(self.wait)).unwrap();
        r
    }

    /// Receive an ERROR packet; returns (code, message).
    pub fn expect_error(&self) -> (u16, String) {
        let (buf, _) = self.recv().expect("no reply");
        match packet::parse(&buf).unwrap() {
            Packet::Error { code, message } => (code, message),
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    /// Receive a DATA packet; returns (block, payload, transfer address).
    pub fn expect_data(&self) -> (u16, Vec<u8>, SocketAddr) {
        let (buf, from) = self.recv().expect("no DATA");
        match packet::parse(&buf).unwrap() {
            Packet::Data { block, data } => (block, data.to_vec(), from),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    pub fn ack(&self, to: SocketAddr, block: u16) {
        self.sock.send_to(&packet::ack(block), to).unwrap();
    }

    /// Fetch `name` lock-step with no options; Err is the server's
    /// (code, message).
    pub fn fetch(&self, name: &str) -> Result<Vec<u8>, (u16, String)> {
        self.rrq(name, &[]);
        let mut out = Vec::new();
        loop {
            match self.recv_packet() {
                (Packet::Data { block, data }, tid) => {
                    out.extend_from_slice(data);
                    self.ack(tid, block);
                    if data.len() < 512 {
                        return Ok(out);
                    }
                }
                (Packet::Error { code, message }, _) => return Err((code, message)),
                (other, _) => panic!("unexpected {other:?}"),
            }
        }
    }
}
