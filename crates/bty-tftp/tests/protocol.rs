//! Protocol tests of bty-tftp against real clients (atftp 0.8, tftp-hpa)
//! and a raw-UDP client (tests/common) for what the real clients cannot do
//! (drop an ACK, send garbage, abort a transfer). The server runs
//! in-process on 127.0.0.1 and [::1]; no traffic leaves loopback.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bty_tftp::packet::{self, Packet, OP_RRQ, OP_WRQ};
use common::{atftp, have, random_bytes, text, tftp_hpa, Raw, Server};

#[test]
fn atftp_fetches_byte_exact_with_and_without_options() {
    if !have("atftp") {
        return;
    }
    let s = Server::start(|_| {});
    let out = tempfile::tempdir().unwrap();
    let files = [
        ("empty", Vec::new()),
        ("exact", random_bytes(1024, 1)),
        ("odd", random_bytes(1000, 2)),
        ("big.bin", random_bytes(1 << 20, 3)),
    ];
    for (name, data) in &files {
        s.write(name, data);
    }
    let option_sets: [&[&str]; 4] = [
        &[],
        &["blksize 1428", "windowsize 8", "tsize 0"],
        &["blksize 65464", "windowsize 1000"],
        &["timeout 2", "blksize 8"],
    ];
    for v6 in [false, true] {
        if v6 && s.v6.is_none() {
            eprintln!("skipping IPv6: [::1] cannot be bound here");
            continue;
        }
        for opts in option_sets {
            for (name, data) in &files {
                // 131072 eight-byte blocks would only slow the suite down;
                // rollover has its own test.
                if opts.contains(&"blksize 8") && *name == "big.bin" {
                    continue;
                }
                let local = out.path().join(format!("{name}-{v6}"));
                let o = atftp(s.addr(v6), name, &local, opts);
                assert!(o.status.success(), "{name} {opts:?} v6={v6}: {}", text(&o));
                assert_eq!(
                    &std::fs::read(&local).unwrap(),
                    data,
                    "{name} {opts:?} v6={v6}"
                );
            }
        }
    }
}

#[test]
fn tftp_hpa_fetches_byte_exact_over_v4_and_v6() {
    if !have("tftp") {
        return;
    }
    let s = Server::start(|_| {});
    let data = s.write("ipxe.efi", &random_bytes(300_000, 4));
    let out = tempfile::tempdir().unwrap();
    for v6 in [false, true] {
        if v6 && s.v6.is_none() {
            eprintln!("skipping IPv6: [::1] cannot be bound here");
            continue;
        }
        let local = out.path().join(format!("ipxe-{v6}"));
        // A leading slash is stripped, as with in.tftpd -s.
        let o = tftp_hpa(
            s.addr(v6),
            "binary",
            &format!("get /ipxe.efi {}", local.display()),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(&local).unwrap(), data);
    }
}

#[test]
fn traversal_and_non_files_are_refused_with_tftp_errors() {
    if !have("tftp") {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let s = Server::start(|_| {});
    std::os::unix::fs::symlink(outside.path().join("secret"), s.path("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), s.path("escdir")).unwrap();
    std::fs::create_dir(s.path("dir")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("x");
    for (name, want) in [
        ("../etc/passwd", "Error code 2"),
        ("dir/../../etc/passwd", "Error code 2"),
        ("/etc/passwd", "Error code 1"),
        ("escape", "Error code 2"),
        ("escdir/secret", "Error code 2"),
        ("dir", "Error code 2"),
        ("missing", "Error code 1"),
    ] {
        let o = tftp_hpa(s.v4, "binary", &format!("get {name} {}", local.display()));
        assert!(text(&o).contains(want), "{name}: {}", text(&o));
        let got = std::fs::read(&local).unwrap_or_default();
        assert!(!got.starts_with(b"secret") && !got.starts_with(b"root:"));
    }
    // netascii is refused with an explanation (boot files are binary).
    s.write("f", b"hello\n");
    let o = tftp_hpa(s.v4, "ascii", &format!("get f {}", local.display()));
    assert!(text(&o).contains("octet"), "{}", text(&o));
}

#[test]
fn write_requests_are_refused() {
    let s = Server::start(|_| {});
    if have("atftp") {
        let src = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(src.path(), b"x").unwrap();
        let o = Command::new("timeout")
            .args(["30", "atftp", "--put", "-r", "new", "-l"])
            .arg(src.path())
            .arg("127.0.0.1")
            .arg(s.v4.port().to_string())
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains("read-only"), "{}", text(&o));
    }
    let c = Raw::new(s.v4);
    c.send(&packet::request(OP_WRQ, "new", "octet", &[]));
    let (code, msg) = c.expect_error();
    assert_eq!(code, 2);
    assert!(msg.contains("read-only"));
    assert!(!s.path("new").exists());
}

#[test]
fn bad_packets_get_errors_or_are_dropped_and_the_server_survives() {
    let s = Server::start(|_| {});
    let data = s.write("f", &random_bytes(700, 5));
    let c = Raw::new(s.v4);
    let absurd: Vec<(&str, &str)> = (0..40).map(|_| ("blksize", "1")).collect();
    let long_value = "9".repeat(500);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown opcode", vec![0, 42, 1, 2, 3]),
        ("no NUL terminator", b"\0\x01fileoctet".to_vec()),
        ("no mode", b"\0\x01file\0".to_vec()),
        ("bad mode", b"\0\x01f\0ebcdic\0".to_vec()),
        ("NUL inside the name", b"\0\x01f\0../x\0octet\0".to_vec()),
        (
            "absurd options",
            packet::request(OP_RRQ, "f", "octet", &absurd),
        ),
        (
            "absurd option value",
            packet::request(OP_RRQ, "f", "octet", &[("blksize", &long_value)]),
        ),
        (
            "long name",
            packet::request(OP_RRQ, &"a".repeat(300), "octet", &[]),
        ),
        ("not UTF-8", b"\0\x01\xff\xfe\0octet\0".to_vec()),
    ];
    for (what, buf) in cases {
        c.send(&buf);
        let (code, msg) = c.expect_error();
        assert!(code == 4 || code == 2, "{what}: code {code} {msg}");
    }
    // Too short to be anything, and stray DATA/ACK on the request port:
    // dropped silently.
    for buf in [vec![], vec![0], vec![0, 4, 0, 1], vec![0, 3, 0, 1, 9]] {
        c.send(&buf);
        assert!(c.recv_within(Duration::from_millis(300)).is_none());
    }
    // Oversized datagram: refused, not parsed from a cut buffer.
    c.send(&vec![1u8; 4000]);
    assert_eq!(c.expect_error().0, 4);
    // Still serving.
    c.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let (b1, d1, tid) = c.expect_data();
    assert_eq!((b1, d1.as_slice()), (1, &data[..512]));
    c.ack(tid, 1);
    let (b2, d2, _) = c.expect_data();
    assert_eq!((b2, d2.as_slice()), (2, &data[512..]));
    c.ack(tid, 2);
}

#[test]
fn lost_ack_is_retransmitted_and_retries_are_capped() {
    let s = Server::start(|o| {
        o.timeout = Duration::from_millis(200);
        o.retries = 2;
    });
    let data = s.write("f", &random_bytes(1000, 6));
    let c = Raw::new(s.v4);
    c.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let (b, d, tid) = c.expect_data();
    assert_eq!(b, 1);
    // Drop our ACK: the server must send block 1 again.
    let (b, d_again, tid_again) = c.expect_data();
    assert_eq!((b, &d_again, tid_again), (1, &d, tid));
    // A duplicate ACK of nothing new is not answered (no Sorcerer's
    // Apprentice); the real ACK moves on.
    c.ack(tid, 0);
    c.ack(tid, 1);
    // Skip further copies of block 1 already in flight on a slow machine.
    let (b, d2) = loop {
        let (b, d, _) = c.expect_data();
        if b != 1 {
            break (b, d);
        }
    };
    assert_eq!((b, d2.as_slice()), (2, &data[512..]));
    // Now go silent: 1 send + 2 retransmits, then a timeout error.
    let mut copies = 1;
    loop {
        let (buf, _) = c.recv().expect("server went silent without an error");
        match packet::parse(&buf).unwrap() {
            Packet::Data { block: 1, .. } => {}
            Packet::Data { block: 2, .. } => copies += 1,
            Packet::Error { message, .. } => {
                assert!(message.contains("timed out"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(copies, 3);
}

#[test]
fn window_resends_from_the_acked_gap_and_foreign_tids_are_refused() {
    let s = Server::start(|_| {});
    let data = s.write("f", &random_bytes(10 * 512 + 3, 7));
    let c = Raw::new(s.v4);
    c.send(&packet::request(
        OP_RRQ,
        "f",
        "octet",
        &[("windowsize", "4"), ("tsize", "0"), ("bogus", "1")],
    ));
    let (buf, tid) = c.recv().unwrap();
    assert_eq!(
        packet::parse(&buf).unwrap(),
        Packet::Oack(vec![("windowsize", "4"), ("tsize", "5123")])
    );
    // A packet from another port gets ERROR 5; the transfer goes on.
    let intruder = Raw::new(tid);
    intruder.ack(tid, 0);
    assert_eq!(intruder.expect_error().0, 5);
    c.ack(tid, 0);
    let blocks: Vec<u16> = (0..4).map(|_| c.expect_data().0).collect();
    assert_eq!(blocks, [1, 2, 3, 4]);
    // Pretend block 3 was lost: ACK 2, expect 3..=6.
    c.ack(tid, 2);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (b, d, _) = c.expect_data();
        let off = (usize::from(b) - 1) * 512;
        assert_eq!(d, data[off..(off + 512).min(data.len())]);
        got.push(b);
    }
    assert_eq!(got, [3, 4, 5, 6]);
    c.ack(tid, 6);
    let rest: Vec<u16> = (0..4).map(|_| c.expect_data().0).collect();
    assert_eq!(rest, [7, 8, 9, 10]);
    c.ack(tid, 10);
    let (b, d, _) = c.expect_data();
    assert_eq!((b, d.len()), (11, 3));
    c.ack(tid, 11);
    assert!(c.recv_within(Duration::from_millis(500)).is_none());
}

#[test]
fn session_limit_answers_busy() {
    let s = Server::start(|o| {
        o.max_sessions = 1;
        o.timeout = Duration::from_secs(2);
    });
    s.write("f", &random_bytes(2000, 8));
    let a = Raw::new(s.v4);
    a.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let _ = a.expect_data();
    // A retransmitted RRQ from the same client does not start a second
    // transfer (and is not refused either).
    a.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let b = Raw::new(s.v4);
    b.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let (code, msg) = b.expect_error();
    assert_eq!(code, 0);
    assert!(msg.contains("busy"), "{msg}");
}

#[test]
fn reply_leaves_from_the_address_the_request_was_sent_to() {
    // Listen on the wildcard, talk to 127.0.0.2 from 127.0.0.1: without
    // IP_PKTINFO the reply would come from 127.0.0.1.
    let s = Server::start_on("0.0.0.0:0".parse().unwrap(), |_| {});
    s.write("f", b"hi");
    let target: SocketAddr = SocketAddr::new("127.0.0.2".parse().unwrap(), s.v4.port());
    let c = Raw::new(target);
    c.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let (_, d, from) = c.expect_data();
    assert_eq!(d, b"hi");
    assert_eq!(from.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
    assert_ne!(from.port(), s.v4.port());
    c.ack(from, 1);
}

#[test]
fn second_stage_serves_the_script_to_the_second_fetch_within_the_window() {
    if !have("atftp") {
        return;
    }
    let s = Server::start(|o| {
        o.second_stage = vec!["undionly.kpxe=http://192.0.2.10:8080/pxe-bootstrap.ipxe"
            .parse()
            .unwrap()];
        o.second_stage_window = Duration::from_secs(30);
    });
    let binary = s.write("undionly.kpxe", &random_bytes(70_000, 9));
    let other = s.write("ipxe.efi", &random_bytes(5000, 10));
    let out = tempfile::tempdir().unwrap();
    let fetch = |name: &str, opts: &[&str]| {
        let local = out.path().join("got");
        let o = atftp(s.v4, name, &local, opts);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(&local).unwrap()
    };
    // A PXE ROM's tsize probe that it aborts does not count as served.
    let c = Raw::new(s.v4);
    c.send(&packet::request(
        OP_RRQ,
        "undionly.kpxe",
        "octet",
        &[("tsize", "0")],
    ));
    let (buf, tid) = c.recv().unwrap();
    assert!(matches!(packet::parse(&buf).unwrap(), Packet::Oack(_)));
    c.sock
        .send_to(
            &packet::error(packet::ErrorCode::OptionRefused, "probe"),
            tid,
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // Firmware loads the binary; iPXE then asks again and gets the script.
    assert_eq!(fetch("undionly.kpxe", &["tsize 0", "blksize 1432"]), binary);
    let script = fetch("/undionly.kpxe", &["tsize 0", "blksize 1432"]);
    let script = String::from_utf8(script).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(script.contains("chain http://192.0.2.10:8080/pxe-bootstrap.ipxe"));
    // Binary and script alternate: the next boot gets the binary again.
    assert_eq!(fetch("undionly.kpxe", &[]), binary);
    // Files without a rule are never replaced.
    assert_eq!(fetch("ipxe.efi", &[]), other);
    assert_eq!(fetch("ipxe.efi", &[]), other);
}

#[test]
fn rollover_beyond_65535_blocks_at_blksize_512() {
    if !have("atftp") {
        return;
    }
    let s = Server::start(|_| {});
    // 33 MiB + 100 bytes: 67585 blocks of 512, wire numbers wrap past 65535.
    let data = s.write("big", &random_bytes(33 * 1024 * 1024 + 100, 11));
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("big");
    // windowsize keeps the test short; blocks stay 512 bytes.
    let o = atftp(s.v4, "big", &local, &["windowsize 16"]);
    assert!(o.status.success(), "{}", text(&o));
    let got = std::fs::read(&local).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "content differs");
}

#[test]
fn blksize_is_capped_per_address_family() {
    let s = Server::start(|_| {});
    s.write("f", &random_bytes(3000, 12));
    for (v6, want) in [(false, "1468"), (true, "1448")] {
        if v6 && s.v6.is_none() {
            eprintln!("skipping IPv6: [::1] cannot be bound here");
            continue;
        }
        let c = Raw::new(s.addr(v6));
        c.send(&packet::request(
            OP_RRQ,
            "f",
            "octet",
            &[("blksize", "65464")],
        ));
        let (buf, tid) = c.recv().unwrap();
        assert_eq!(
            packet::parse(&buf).unwrap(),
            Packet::Oack(vec![("blksize", want)])
        );
        c.ack(tid, 0);
        let (_, d, _) = c.expect_data();
        assert_eq!(d.len().to_string(), want);
        // Abort politely.
        c.sock
            .send_to(&packet::error(packet::ErrorCode::NotDefined, "done"), tid)
            .unwrap();
    }
}

/// The TFTP half of breaking the stock-iPXE loop, with real iPXE: qemu's
/// iPXE option ROM loads Debian's stock `undionly.kpxe` from bty-tftp; that
/// iPXE does DHCP again, asks for the same file, receives the chain script
/// and fetches the bootstrap script from an HTTP server in this test.
/// qemu user networking maps the guest's 10.0.2.2 to the host's loopback.
#[test]
fn stock_ipxe_in_qemu_chains_to_http_on_its_second_fetch() {
    const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";
    if !have("qemu-system-x86_64") {
        return;
    }
    if !Path::new(UNDIONLY).exists() {
        assert!(
            std::env::var("BTY_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{UNDIONLY} is required (BTY_REQUIRE_TOOLS=1): apt-get install -y ipxe"
        );
        eprintln!("skipping: ipxe not installed");
        return;
    }
    // The bootstrap "bty-web": answers one script, reports each request.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    let (req_tx, req_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let body = "#!ipxe\necho BTY-BOOTSTRAP-REACHED\nshell\n";
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = req_tx.send(line.trim().to_string());
        }
    });

    let s = Server::start(|o| {
        o.second_stage =
            vec![
                format!("undionly.kpxe=http://10.0.2.2:{http_port}/pxe-bootstrap.ipxe")
                    .parse()
                    .unwrap(),
            ];
    });
    std::fs::copy(UNDIONLY, s.path("undionly.kpxe")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    // -nographic: SeaBIOS and the iPXE ROM then print on the serial port.
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-monitor",
            "none",
        ])
        .args(["-no-reboot", "-boot", "n"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,bootfile=tftp://10.0.2.2:{}/undionly.kpxe",
            s.v4.port()
        ))
        .args(["-device", "e1000,netdev=n0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut log = String::new();
    while std::time::Instant::now() < deadline {
        log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        if log.contains("BTY-BOOTSTRAP-REACHED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(
        log.contains("BTY-BOOTSTRAP-REACHED"),
        "iPXE never reached the bootstrap script; serial console:\n{log}"
    );
    // iPXE recognised the second answer for undionly.kpxe as a script.
    assert!(
        log.contains("undionly.kpxe : 147 bytes [script]") || log.contains("[script]"),
        "{log}"
    );
    assert!(
        log.contains("bty-tftp: iPXE is running, chaining to"),
        "{log}"
    );
    assert_eq!(
        req_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "GET /pxe-bootstrap.ipxe HTTP/1.1"
    );
}

/// Issue 12, "the LAN is hostile": one host opens 64 sessions (one per
/// source port, the whole default pool) asking for `timeout=255` and never
/// ACKs. Another host (127.0.0.2; all of 127/8 is loopback on Linux) must
/// still fetch its boot file within a few seconds, retrying on "busy" as
/// firmware does.
#[test]
fn held_sessions_from_one_host_do_not_stop_another_hosts_transfer() {
    let s = Server::start(|_| {});
    let data = s.write("boot.bin", &random_bytes(100_000, 12));
    let rrq = packet::request(OP_RRQ, "boot.bin", "octet", &[("timeout", "255")]);
    let attackers: Vec<UdpSocket> = (0..64)
        .map(|_| {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            a.send_to(&rrq, s.v4).unwrap();
            a
        })
        .collect();
    // Wait until the server has answered every attacker (OACK or busy).
    let (mut held, mut busy) = (0, 0);
    let mut buf = vec![0u8; 2048];
    for a in &attackers {
        a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let (n, _) = a.recv_from(&mut buf).expect("server did not answer an RRQ");
        match packet::parse(&buf[..n]).unwrap() {
            // Today's server echoes `timeout` in an OACK; with the option
            // left out there is none, and DATA 1 comes instead.
            Packet::Oack(_) | Packet::Data { .. } => held += 1,
            Packet::Error { .. } => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("attacker: {held} sessions held, {busy} refused busy");
    let started = Instant::now();
    let got = fetch_retrying("127.0.0.2:0", s.v4, "boot.bin", Duration::from_secs(5));
    let took = started.elapsed();
    let summary = got.as_ref().map(Vec::len);
    eprintln!("honest client on 127.0.0.2: {summary:?} after {took:?}");
    assert!(got == Ok(data), "{summary:?} after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(attackers);
}

/// Fetch `name` lock-step (no options) from a socket bound to `bind`,
/// resending the RRQ on "busy" (after 200 ms) or silence, until `give_up`.
fn fetch_retrying(
    bind: &str,
    server: SocketAddr,
    name: &str,
    give_up: Duration,
) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind(bind).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let end = Instant::now() + give_up;
    let rrq = packet::request(OP_RRQ, name, "octet", &[]);
    let mut last = String::from("no answer");
    let mut buf = vec![0u8; 2048];
    'request: while Instant::now() < end {
        sock.send_to(&rrq, server).unwrap();
        let mut out = Vec::new();
        let mut next: u16 = 1;
        while Instant::now() < end {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                if next == 1 {
                    continue 'request;
                }
                continue;
            };
            match packet::parse(&buf[..n]).unwrap() {
                Packet::Data { block, data } if block == next => {
                    out.extend_from_slice(data);
                    sock.send_to(&packet::ack(block), from).unwrap();
                    if data.len() < 512 {
                        return Ok(out);
                    }
                    next = next.wrapping_add(1);
                }
                Packet::Data { .. } => {
                    let _ = sock.send_to(&packet::ack(next.wrapping_sub(1)), from);
                }
                Packet::Error { message, .. } if message.contains("busy") => {
                    last = message.to_string();
                    std::thread::sleep(Duration::from_millis(200));
                    continue 'request;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
    }
    Err(format!("gave up; last: {last}"))
}

/// A `timeout` above the cap (5 s) is left out of the OACK, a fifth
/// session from one IP is refused "busy", and a client that ACKs just
/// often enough to avoid the retransmit timeout is cut off at the deadline.
#[test]
fn client_timeout_is_capped_and_a_slow_transfer_meets_its_deadline() {
    let s = Server::start(|o| {
        o.transfer_deadline = Duration::from_secs(1);
        o.max_sessions_per_client = 1;
    });
    s.write("f", &random_bytes(20 * 512, 13));
    let c = Raw::new(s.v4);
    c.send(&packet::request(
        OP_RRQ,
        "f",
        "octet",
        &[("timeout", "255"), ("tsize", "0")],
    ));
    let (buf, tid) = c.recv().unwrap();
    assert_eq!(
        packet::parse(&buf).unwrap(),
        Packet::Oack(vec![("tsize", "10240")])
    );
    // Over the per-client cap of 1: busy, and the transfer goes on.
    let other_port = Raw::new(s.v4);
    other_port.send(&packet::request(OP_RRQ, "f", "octet", &[]));
    let (code, msg) = other_port.expect_error();
    assert_eq!(code, 0);
    assert!(
        msg.contains("busy") && msg.contains("your address"),
        "{msg}"
    );
    // ACK every 400 ms (the retransmit timeout is 2 s): the 1 s deadline
    // ends it after a few blocks with an error.
    let started = Instant::now();
    c.ack(tid, 0);
    let message = loop {
        let (buf, _) = c.recv().expect("server went silent");
        match packet::parse(&buf).unwrap() {
            Packet::Data { block, .. } => {
                std::thread::sleep(Duration::from_millis(400));
                c.ack(tid, block);
            }
            Packet::Error { message, .. } => break message.to_string(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(message.contains("too long"), "{message}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
}
