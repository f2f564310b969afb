//! Real loop devices over files pre-filled with 0xAA (so bytes that were
//! not written show), unmounted (if a test mounted one) and detached on
//! drop. Needs root and losetup.

use std::path::Path;
use std::process::Command;

use super::have_tool;

/// An attached loop device (`/dev/loopN`), detached on drop.
pub struct Loop(pub String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

impl Loop {
    /// The kernel name (`loopN`).
    pub fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

/// A loop device of `size` bytes over `<dir>/<file>`; `None` (the test
/// skips) without losetup or root.
pub fn loop_sized(dir: &Path, file: &str, size: usize) -> Option<Loop> {
    if !have_tool("losetup") {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: loop devices need root");
        return None;
    }
    let backing = dir.join(file);
    std::fs::write(&backing, vec![0xaau8; size]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(Loop(
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    ))
}
