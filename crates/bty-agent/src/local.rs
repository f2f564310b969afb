//! PLACEHOLDER until branch `localflash` merges (helper A writes the real
//! module): the shape of the local flash API from the brief, so the
//! wizard compiles against it. It writes nothing.

use std::path::Path;
use std::time::Duration;

use crate::console::Console;
use crate::{Error, Result};

/// A flash of a local file onto a block device (or a regular file, in tests).
pub struct LocalJob<'a> {
    /// The image file.
    pub source: &'a Path,
    /// How it is encoded.
    pub format: bty_proto::ImageFormat,
    /// The block device (or a regular file, in tests).
    pub device: &'a Path,
    /// sha256 of the file as stored: checked before the first write.
    pub expect_stored_sha256: Option<&'a str>,
    /// sha256 of the decoded image, if known: the read-back must match.
    pub expect_sha256: Option<&'a str>,
    /// Decoded size, if known: a too-small disk is refused before the
    /// first write.
    pub expect_size: Option<u64>,
    /// Status lines.
    pub console: &'a Console,
}

/// Progress as it goes.
pub struct Progress {
    /// Bytes written so far.
    pub written: u64,
    /// Bytes to write, when known.
    pub total: Option<u64>,
    /// Since the start.
    pub elapsed: Duration,
}

/// A verified flash.
pub struct LocalOutcome {
    /// Bytes of the image written.
    pub bytes: u64,
    /// sha256 of what was read back.
    pub sha256: String,
    /// How long it took.
    pub duration: Duration,
}

/// Placeholder: refuses, writes nothing.
pub fn flash(job: &LocalJob, progress: &mut dyn FnMut(&Progress)) -> Result<LocalOutcome> {
    flash_on(&crate::target::Host::default(), job, progress)
}

/// Placeholder: refuses, writes nothing.
pub fn flash_on(
    _host: &crate::target::Host,
    _job: &LocalJob,
    _progress: &mut dyn FnMut(&Progress),
) -> Result<LocalOutcome> {
    Err(Error::Unsupported(
        "local flash is not in this build yet (branch localflash)".into(),
    ))
}
