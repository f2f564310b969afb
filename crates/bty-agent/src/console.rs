//! Status lines for the operator: stdout, plus the local and serial
//! consoles when they are other devices than stdout.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where status lines go. Cheap to clone; lines never interleave.
#[derive(Clone, Default)]
pub struct Console {
    extra: Arc<Mutex<Vec<File>>>,
}

impl Console {
    /// stdout plus each of `devices` that exists and is not stdout itself.
    /// Devices are opened non-blocking so a serial line nobody reads never
    /// stalls the flash.
    pub fn new(devices: &[PathBuf]) -> Console {
        let stdout_rdev = File::open("/proc/self/fd/1")
            .and_then(|f| f.metadata())
            .map(|m| m.rdev())
            .ok();
        let mut seen = Vec::new();
        // stdout on /dev/console already reaches the kernel's active
        // consoles (tty0 is the foreground VT, normally tty1): skip them.
        if stdout_rdev == Some(libc::makedev(5, 1)) {
            let active =
                std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
            for name in active.split_whitespace() {
                let name = if name == "tty0" { "tty1" } else { name };
                if let Ok(m) = std::fs::metadata(format!("/dev/{name}")) {
                    seen.push(m.rdev());
                }
            }
        }
        let mut extra = Vec::new();
        for d in devices {
            let Ok(f) = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(d)
            else {
                continue;
            };
            let rdev = f.metadata().map(|m| m.rdev()).unwrap_or(0);
            if rdev != 0 && (Some(rdev) == stdout_rdev || seen.contains(&rdev)) {
                continue;
            }
            seen.push(rdev);
            extra.push(f);
        }
        Console {
            extra: Arc::new(Mutex::new(extra)),
        }
    }

    /// Print one line, prefixed `bty: `.
    pub fn line(&self, msg: impl AsRef<str>) {
        let text = format!("bty: {}\n", msg.as_ref());
        let mut extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        for f in extra.iter_mut() {
            // Consoles want CR LF; a full buffer drops the line, by design.
            let _ = f.write_all(text.replace('\n', "\r\n").as_bytes());
        }
    }
}
