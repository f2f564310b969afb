//! Exit codes end to end: what `bty-lab --help` promises under "Exit
//! status", from the real binary. The unhealthy code (5) needs an engine;
//! tests/it/engines.rs checks it on a broken upgrade.

use crate::util::{exits_with, fails_with, ok, run, run_with, stdout, TestDir};

const USAGE: i32 = 2;
const REFUSED: i32 = 3;
const ENGINE_UNREACHABLE: i32 = 4;

fn init(t: &TestDir) -> String {
    let dest = t.path().join("lab");
    let dest = dest.to_str().unwrap().to_string();
    ok(&run(&["init", &dest, "--host-addr", "10.0.0.5"]));
    dest
}

#[test]
fn help_lists_the_exit_codes() {
    let o = run(&["--help"]);
    ok(&o);
    let help = stdout(&o);
    for line in [
        "Exit status:",
        "  0  success",
        "  1  any other failure",
        "  2  usage",
        "  3  refused",
        "  4  no container engine answered",
        "  5  the stack did not become healthy",
    ] {
        assert!(help.contains(line), "{line:?} missing:\n{help}");
    }
}

#[test]
fn usage_errors_are_clap_s_2() {
    exits_with(&run(&["deploy", "--no-such-flag"]), USAGE);
    exits_with(&run(&["deploy", "/x", "--systemd", "--no-systemd"]), USAGE);
    exits_with(&run(&["upgrade", "/x", "--timeout", "soon"]), USAGE);
}

#[test]
fn safety_refusals_are_3() {
    // Files bty-lab did not write in DEST.
    let t = TestDir::new();
    std::fs::write(t.path().join("notes.txt"), "mine").unwrap();
    let o = run(&[
        "init",
        t.path().to_str().unwrap(),
        "--host-addr",
        "10.0.0.5",
    ]);
    fails_with(&o, "notes.txt");
    exits_with(&o, REFUSED);
    // A downgrade without --allow-downgrade, before any engine is asked.
    let t = TestDir::new();
    let dest = init(&t);
    let o = run(&["upgrade", &dest, "--to", "0.0.1"]);
    fails_with(&o, "Refusing to downgrade");
    exits_with(&o, REFUSED);
    // A destructive purge with no terminal to confirm on and no --yes.
    let o = run_with(&crate::util::bin(), &["purge", &dest, "--data"], None);
    fails_with(&o, "--yes");
    exits_with(&o, REFUSED);
    assert!(t.path().join("lab/envvars").exists());
    // --systemd where systemd does not run.
    let o = std::process::Command::new(crate::util::bin())
        .args(["deploy", &dest, "--systemd", "-y"])
        .env("BTY_LAB_SYSTEMD_RUNDIR", t.path().join("no-systemd"))
        .output()
        .unwrap();
    fails_with(&o, "systemd is not running");
    exits_with(&o, REFUSED);
}

#[test]
fn no_engine_is_4() {
    let t = TestDir::new();
    let dest = init(&t);
    let o = std::process::Command::new(crate::util::bin())
        .args(["status", &dest])
        .env(
            "DOCKER_HOST",
            format!("unix://{}", t.path().join("none.sock").display()),
        )
        .output()
        .unwrap();
    fails_with(&o, "no container engine answered");
    exits_with(&o, ENGINE_UNREACHABLE);
    // The engine DEST remembers, gone: 4 too, for every engine command.
    let manifest = t.path().join("lab/.bty-lab.toml");
    let mut m = std::fs::read_to_string(&manifest).unwrap();
    m.push_str(&format!(
        "\n[engine]\nkind = \"docker\"\naddr = \"{}\"\n",
        t.path().join("gone.sock").display()
    ));
    std::fs::write(&manifest, m).unwrap();
    for cmd in ["status", "logs"] {
        let o = run(&[cmd, &dest]);
        fails_with(&o, "does not answer");
        exits_with(&o, ENGINE_UNREACHABLE);
    }
}

#[test]
fn other_failures_are_1() {
    let t = TestDir::new();
    let o = run(&["status", t.path().to_str().unwrap()]);
    fails_with(&o, "is not a bty-lab deploy");
    exits_with(&o, 1);
}
