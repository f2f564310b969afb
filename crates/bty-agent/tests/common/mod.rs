//! A real HTTP server on 127.0.0.1 playing bty-web and the image origin,
//! with fault injection. Hand-rolled on std::net so a test can cut a
//! connection after exactly N bytes, stall it, or change the object between
//! two requests.
#![allow(dead_code)]

pub mod loops;
pub mod stick;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const MAC: &str = "52:54:00:00:00:01";
pub const TOKEN: &str = "tok-123";

/// Faults applied to the next GET of an image (each fires once).
#[derive(Default, Clone)]
pub struct Faults {
    /// Close the connection after this many body bytes.
    pub drop_after: Option<u64>,
    /// Stop sending (keep the socket open) after this many body bytes.
    pub stall_after: Option<u64>,
    /// After the first request, serve this content (with a new ETag).
    pub change_to: Option<Vec<u8>>,
}

#[derive(Default)]
pub struct State {
    pub plan: serde_json::Value,
    pub images: HashMap<String, Vec<u8>>,
    pub faults: Faults,
    /// `done` answers to give before accepting (e.g. 503 three times).
    pub done_failures: Vec<u16>,
    pub inventory: Vec<serde_json::Value>,
    pub progress: Vec<serde_json::Value>,
    /// Every done body received, with the status answered.
    pub done: Vec<(u16, serde_json::Value)>,
    /// (path, Range header) of every image GET.
    pub image_gets: Vec<(String, Option<String>)>,
}

pub struct Server {
    pub base: String,
    pub state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(c, &st);
                });
            }
        });
        Server { base, state }
    }

    /// Serve `bytes` at `/img/<name>` and make the plan flash it.
    pub fn flash_plan(&self, name: &str, bytes: Vec<u8>, format: &str, serial: &str) {
        let sha = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len();
        let mut st = self.state.lock().unwrap();
        st.images.insert(name.to_string(), bytes);
        st.plan = serde_json::json!({
            "version": 1, "mode": "flash", "cycle": "c1", "token": TOKEN,
            "image": {"url": format!("{}/img/{name}", self.base), "sha256": sha, "size": size,
                      "format": format, "name": name},
            "target": {"serial": serial},
            "report": {"progress": format!("{}/pxe/{MAC}/progress", self.base),
                       "done": format!("{}/pxe/{MAC}/done", self.base)},
        });
    }

    pub fn agent(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "--server",
            &self.base,
            "--mac",
            MAC,
            "--once",
            "--no-reboot",
            "--backoff-ms",
            "50",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_bty"))
            .args(&args)
            .output()
            .unwrap();
        eprintln!(
            "--- agent stdout ---\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        eprintln!(
            "--- agent stderr ---\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The done bodies the server accepted (2xx).
    pub fn accepted_done(&self) -> Vec<serde_json::Value> {
        let st = self.state.lock().unwrap();
        st.done
            .iter()
            .filter(|(c, _)| *c < 300)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn etag(b: &[u8]) -> String {
    format!("\"{}\"", &hex::encode(Sha256::digest(b))[..16])
}

fn handle(c: TcpStream, st: &Arc<Mutex<State>>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let json =
        || serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
    let mut w = c;
    let pxe = format!("/pxe/{MAC}/");
    if let Some(what) = path.strip_prefix(&pxe) {
        let mut s = st.lock().unwrap();
        let (code, out) = match (method.as_str(), what) {
            ("GET", "plan") => (200, s.plan.to_string()),
            ("POST", "inventory") => {
                s.inventory.push(json());
                (204, String::new())
            }
            ("POST", "progress") => {
                s.progress.push(json());
                (204, String::new())
            }
            ("POST", "done") => {
                let code = if s.done_failures.is_empty() {
                    200
                } else {
                    s.done_failures.remove(0)
                };
                s.done.push((code, json()));
                (code, r#"{"recorded":true,"state":"done"}"#.to_string())
            }
            _ => (404, String::new()),
        };
        drop(s);
        return respond(
            &mut w,
            code,
            &[("Content-Type", "application/json".into())],
            out.as_bytes(),
        );
    }
    if let Some(name) = path.strip_prefix("/img/") {
        let range = headers.get("range").cloned();
        let (bytes, faults) = {
            let mut s = st.lock().unwrap();
            if method == "GET" {
                s.image_gets.push((name.to_string(), range.clone()));
            }
            let Some(b) = s.images.get(name).cloned() else {
                drop(s);
                return respond(&mut w, 404, &[], b"");
            };
            // Faults hit the streaming GET (no Range), never the probes.
            let f = if method == "GET" && range.is_none() {
                std::mem::take(&mut s.faults)
            } else {
                Faults::default()
            };
            if let Some(new) = f.change_to.clone() {
                s.images.insert(name.to_string(), new);
            }
            (b, f)
        };
        let tag = etag(&bytes);
        let total = bytes.len() as u64;
        let if_range_ok = headers.get("if-range").is_none_or(|t| *t == tag);
        let (status, start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(spec) if if_range_ok => {
                let (a, b) = spec.split_once('-').unwrap();
                if a.is_empty() {
                    let n: u64 = b.parse().unwrap();
                    (206, total.saturating_sub(n), total)
                } else {
                    let a: u64 = a.parse().unwrap();
                    let b: u64 = if b.is_empty() {
                        total
                    } else {
                        (b.parse::<u64>().unwrap() + 1).min(total)
                    };
                    (206, a, b)
                }
            }
            _ => (200, 0, total),
        };
        let mut hs = vec![("ETag", tag), ("Accept-Ranges", "bytes".to_string())];
        if status == 206 {
            hs.push((
                "Content-Range",
                format!("bytes {start}-{}/{total}", end.max(1) - 1),
            ));
        }
        let body = &bytes[start as usize..end as usize];
        if method == "HEAD" {
            return respond_head(&mut w, status, &hs, body.len());
        }
        if let Some(n) = faults.drop_after {
            respond_head(&mut w, status, &hs, body.len())?;
            w.write_all(&body[..n as usize])?;
            w.flush()?;
            return w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(n) = faults.stall_after {
            respond_head(&mut w, status, &hs, body.len())?;
            w.write_all(&body[..n as usize])?;
            w.flush()?;
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        // The new content replaced the old for later requests only.
        return respond(&mut w, status, &hs, body);
    }
    respond(&mut w, 404, &[], b"")
}

fn respond_head(
    w: &mut TcpStream,
    code: u16,
    hs: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} X\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in hs {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())
}

fn respond(
    w: &mut TcpStream,
    code: u16,
    hs: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    respond_head(w, code, hs, body.len())?;
    w.write_all(body)?;
    w.flush()
}

/// A disk-like image: a "partition table" in the first sector, text, random
/// data and long runs of zeroes, `mib` MiB plus an odd tail.
pub fn image(mib: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; (mib << 20) + 3000];
    v[..512].fill(0x55);
    let mut x = seed | 1;
    for (i, chunk) in v.chunks_mut(256 << 10).enumerate() {
        if i % 3 == 1 {
            continue; // zeroes
        }
        for b in chunk.iter_mut().step_by(3) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    v
}

pub fn compress(format: &str, d: &[u8]) -> Vec<u8> {
    match format {
        "img" => d.to_vec(),
        "img.gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        "img.xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        "img.zst" => zstd::encode_all(d, 3).unwrap(),
        "img.bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        }
        f => panic!("{f}"),
    }
}

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Is `tool` on PATH? If not: fail under BTY_REQUIRE_TOOLS=1, else skip.
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{tool} is required (BTY_REQUIRE_TOOLS=1) but not installed");
        }
        eprintln!("skipping: {tool} not installed");
    }
    found
}

pub fn tmpfile(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
