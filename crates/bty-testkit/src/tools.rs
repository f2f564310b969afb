//! The tool gate: a test that needs an external program skips (prints
//! `skipping: ...` and passes) when it is missing, and fails when
//! `BTY_REQUIRE_TOOLS=1`, so a green CI run means every test really ran.
//!
//! ```no_run
//! if !bty_testkit::tools::have("qemu-img", "qemu-utils") {
//!     return;
//! }
//! ```

use std::path::Path;

/// Whether `BTY_REQUIRE_TOOLS=1` is set: then a missing tool fails the
/// test instead of skipping it.
pub fn required() -> bool {
    std::env::var("BTY_REQUIRE_TOOLS").as_deref() == Ok("1")
}

/// Whether `tool` is on `PATH`. When it is not: panics under
/// `BTY_REQUIRE_TOOLS=1` (naming the Debian `package` to install),
/// otherwise prints `skipping: {tool} not installed` and returns false,
/// and the caller returns.
pub fn have(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    gate(found, tool, package)
}

/// Whether the file at `path` exists (a tool or a firmware file named by
/// its full path, such as `/usr/bin/chromedriver`); missing, the same
/// rule as [`have`].
pub fn have_file(path: &str, package: &str) -> bool {
    gate(Path::new(path).exists(), path, package)
}

fn gate(found: bool, what: &str, package: &str) -> bool {
    if !found {
        assert!(
            !required(),
            "{what} is required (BTY_REQUIRE_TOOLS=1) but not installed: apt-get install -y {package}"
        );
        eprintln!("skipping: {what} not installed");
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tool_on_path_is_found_and_a_made_up_one_is_not() {
        assert!(super::have("sh", "dash"));
        if !super::required() {
            assert!(!super::have("bty-no-such-tool-0", "none"));
            assert!(!super::have_file("/nonexistent/bty-tool", "none"));
        }
    }
}
