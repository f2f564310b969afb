//! A stick's data partition in a directory, and `bty wizard --stdio` run
//! on it with loop devices as the machine's disks and scripted answers.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

use super::loops::Loop;
use super::{compress, sha};

/// A stick's data partition: `images/<name>` files and the manifest.
pub struct Stick {
    pub root: PathBuf,
    pub images: Vec<serde_json::Value>,
    pub auto: Option<serde_json::Value>,
    pub version: u32,
    /// The manifest's `server` and `key`.
    pub server: Option<String>,
    pub key: Option<String>,
}

impl Stick {
    pub fn new(root: &Path) -> Stick {
        std::fs::create_dir_all(root.join("images")).unwrap();
        Stick {
            root: root.to_path_buf(),
            images: Vec::new(),
            auto: None,
            version: 1,
            server: None,
            key: None,
        }
    }

    /// Store `decoded` as `format` under `name`; the manifest gets its
    /// stored and decoded sizes and digests.
    pub fn add(&mut self, name: &str, format: &str, decoded: &[u8]) {
        let stored = compress(format, decoded);
        let file = format!("images/{name}.{format}");
        std::fs::write(self.root.join(&file), &stored).unwrap();
        self.images.push(json!({
            "name": name, "file": file, "format": format,
            "stored_size": stored.len(), "stored_sha256": sha(&stored),
            "size": decoded.len(), "sha256": sha(decoded),
        }));
        self.write();
    }

    pub fn write(&self) {
        let mut m = json!({"version": self.version, "built_by": "test", "images": self.images});
        if let Some(a) = &self.auto {
            m["auto"] = a.clone();
        }
        if let Some(s) = &self.server {
            m["server"] = json!(s);
        }
        if let Some(k) = &self.key {
            m["key"] = json!(k);
        }
        std::fs::write(
            self.root.join("bty-stick.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }
}

/// `bty wizard --stdio` over `stick` with `disks` (`(loop, serial)`),
/// answering `input`.
pub fn wizard(stick: &Path, disks: &[(&Loop, &str)], input: &str) -> Output {
    wizard_with(stick, disks, input, &[])
}

/// [`wizard`] with `extra` arguments.
pub fn wizard_with(stick: &Path, disks: &[(&Loop, &str)], input: &str, extra: &[&str]) -> Output {
    let spec: Vec<String> = disks.iter().map(|(l, s)| format!("{}={s}", l.0)).collect();
    let mut c = Command::new(env!("CARGO_BIN_EXE_bty"))
        .arg("wizard")
        .arg("--stdio")
        .arg("--after-exit")
        .arg("--stick")
        .arg(stick)
        .arg("--disks")
        .arg(spec.join(","))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A wizard that refuses at once exits before reading: a broken pipe
    // here is its answer, not the test's failure.
    let _ = c.stdin.take().unwrap().write_all(input.as_bytes());
    c.wait_with_output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The device still holds only the fixture's 0xAA fill.
pub fn untouched(l: &Loop) -> bool {
    std::fs::read(&l.0).unwrap().iter().all(|&b| b == 0xaa)
}
