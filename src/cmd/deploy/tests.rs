//! `deploy` against the fake engine: where the images come from, the
//! order the stack starts in, and what a failed start says.

use std::collections::HashMap;

use super::*;
use crate::cmd::testkit::{self, TIMEOUT};
use crate::engine::fake::{Behaviour, Fake};
use crate::engine::{Image, Kind};
use crate::exit;
use crate::images::{LABEL_BINARY, LABEL_BOOTFILES};
use crate::{containers, stack};

/// Images present that this binary (sha256 `aa`) built with the media in
/// `media`.
fn built_here(f: &Fake, m: &Manifest, media: &std::path::Path) {
    for svc in m.services() {
        let labels = HashMap::from([
            (LABEL_BINARY.to_string(), "aa".to_string()),
            (
                LABEL_BOOTFILES.to_string(),
                testkit::boot_digest(media, &svc),
            ),
        ]);
        let img = Image {
            labels,
            repo_digests: vec![],
        };
        f.add_image(&m.image(&svc), img);
    }
}

#[tokio::test]
async fn auto_reuses_the_images_this_binary_built() {
    let (t, m) = testkit::lab();
    let f = Fake::new(Kind::Docker);
    built_here(&f, &m, t.path());
    let mut src = testkit::source("aa", t.path());
    let line = images::auto(&f, &wanted(&m), &mut src).await.unwrap();
    assert!(
        line.starts_with("images: reused the ones in docker"),
        "{line}"
    );
    assert!(line.contains("built from this binary"), "{line}");
    assert_eq!(f.calls(), Vec::<String>::new(), "reuse pulled or built");
    // Another binary's images are not reused: pulled instead.
    let mut other = testkit::source("bb", t.path());
    let line = images::auto(&f, &wanted(&m), &mut other).await.unwrap();
    assert!(
        line.contains("was built from another bty-lab binary"),
        "{line}"
    );
    assert_eq!(f.calls_of("pull").len(), 3, "{:?}", f.calls());
}

#[tokio::test]
async fn auto_pulls_what_is_missing() {
    let (t, m) = testkit::lab();
    let f = Fake::new(Kind::Podman);
    let line = images::auto(&f, &wanted(&m), &mut testkit::source("aa", t.path()))
        .await
        .unwrap();
    let refs: Vec<String> = m.services().iter().map(|s| m.image(s)).collect();
    assert_eq!(
        line,
        format!("images: pulled {} (not in podman yet)", refs.join(", "))
    );
    assert_eq!(f.calls_of("pull"), refs);
    assert!(f.calls_of("build").is_empty());
    // Pulled images are current the next time.
    let again = images::auto(&f, &wanted(&m), &mut testkit::source("aa", t.path())).await;
    assert!(again.unwrap().contains("(pulled earlier)"));
}

#[tokio::test]
async fn auto_builds_from_this_binary_what_a_failed_pull_leaves() {
    let (t, m) = testkit::lab();
    let f = Fake::new(Kind::Docker);
    let web = m.image(&stack::WEB);
    f.fail_pull(&web, "engine said: connection refused");
    let line = images::auto(&f, &wanted(&m), &mut testkit::source("aa", t.path()))
        .await
        .unwrap();
    assert!(
        line.starts_with("images: built locally from /usr/local/bin/bty-lab"),
        "{line}"
    );
    assert!(line.contains(&format!(
        "pull of {web} failed: engine said: connection refused"
    )));
    // withcache came first and was pulled; the rest is built.
    let cache = m.image(&stack::CACHE);
    assert_eq!(f.calls_of("pull"), [cache.clone(), web.clone()]);
    assert_eq!(f.calls_of("build"), [web.clone(), m.image(&stack::TFTP)]);
    let built = f.image(&web).unwrap();
    assert_eq!(built.labels[LABEL_BINARY], "aa");
    let digest = testkit::boot_digest(t.path(), &stack::WEB);
    assert_eq!(built.labels[LABEL_BOOTFILES], digest);
    // A build that fails too says both.
    let f = Fake::new(Kind::Docker);
    f.fail_pull("*", "no registry");
    f.fail_builds("no space left");
    let e = images::auto(&f, &wanted(&m), &mut testkit::source("aa", t.path())).await;
    let e = format!("{:#}", e.unwrap_err());
    assert!(e.contains("no space left"), "{e}");
}

#[tokio::test]
async fn the_stack_starts_network_first_then_withcache_web_tftp() {
    let (_t, m) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Docker, &m);
    start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap();
    let names: Vec<String> = m.services().iter().map(|s| m.container(s)).collect();
    let mut want = vec![format!("network create {}", m.network())];
    for (svc, name) in m.services().iter().zip(&names) {
        want.push(format!("create {name} {}", m.image(svc)));
        want.push(format!("start {name}"));
    }
    assert_eq!(f.calls(), want);
    // Each container carries the deploy label, its own env and ports.
    let web = f.container(&m.container(&stack::WEB)).unwrap().spec;
    assert_eq!(
        web.labels[stack::LABEL_DEPLOY],
        m.dest.display().to_string()
    );
    assert_eq!(web.env, ["BTY_ADMIN_PASSWORD_HASH=web-hash"]);
    assert_eq!(web.publish, Some(("8080/tcp".to_string(), 8080)));
    assert!(web
        .binds
        .iter()
        .any(|b| b.ends_with(":/etc/bty/bty.toml:ro")));
    let tftp = f.container(&m.container(&stack::TFTP)).unwrap().spec;
    assert_eq!(tftp.network_mode, "host");
}

#[tokio::test]
async fn a_container_that_exits_fails_deploy_which_says_what_it_made() {
    let (_t, m) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Docker, &m);
    f.behave(&m.image(&stack::WEB), Behaviour::Exits);
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let e = e.to_string();
    let web = m.container(&stack::WEB);
    assert!(
        e.starts_with(&format!(
            "bty-web ({web}) is not healthy: exited (restarts: 0)\n"
        )),
        "{e}"
    );
    assert!(e.contains(&format!("  | {web}: panic: no config")), "{e}");
    let made: Vec<String> = m
        .services()
        .iter()
        .map(|s| format!("container {}", m.container(s)))
        .collect();
    assert!(
        e.contains(&format!(
            "It created: network {}, {}.",
            m.network(),
            made.join(", ")
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("bty-lab purge {}", m.dest.display())),
        "{e}"
    );
    // Left for `status` and `logs` to look at.
    assert_eq!(f.container_names().len(), 3);
}

#[tokio::test]
async fn a_service_that_never_gets_healthy_fails_at_the_deadline() {
    let (_t, m) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Docker, &m);
    f.behave(&m.image(&stack::CACHE), Behaviour::NeverHealthy);
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let cache = m.container(&stack::CACHE);
    assert!(
        e.to_string().starts_with(&format!(
            "withcache ({cache}) is not healthy: starting after 0s"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn podman_s_broken_pipe_start_is_retried_then_given_up() {
    let (_t, m) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.broken_pipe_starts(2);
    start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap();
    let cache = m.container(&stack::CACHE);
    assert_eq!(
        f.calls_of("start").iter().filter(|n| **n == cache).count(),
        3
    );
    assert_eq!(f.calls_of("rm"), [cache.clone(), cache.clone()]);
    // A third broken pipe in a row is an error, not a loop.
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.broken_pipe_starts(3);
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("starting container {cache}: ")),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("broken pipe"), "{e:#}");
}

#[tokio::test]
async fn a_port_held_after_a_broken_pipe_is_waited_for_but_not_on_a_first_start() {
    let (_t, m) = testkit::lab();
    let cache = m.container(&stack::CACHE);
    // Seen with Podman 4.3 under load: broken pipe, broken pipe, then the
    // removed container's forwarder still holds the port for a while.
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.broken_pipe_starts(2);
    f.busy_port_starts(2);
    start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        f.calls_of("start").iter().filter(|n| **n == cache).count(),
        5
    );
    // A busy port on the first start is a real conflict: no retry.
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.busy_port_starts(1);
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("address already in use"), "{e:#}");
    assert_eq!(f.calls_of("start"), [cache]);
    // And it is not waited for forever.
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.broken_pipe_starts(1);
    f.busy_port_starts(5);
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("address already in use"), "{e:#}");
    assert_eq!(f.calls_of("start").len(), 6);
}

#[tokio::test]
async fn a_container_of_another_deploy_is_not_replaced() {
    let (_t, m) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Docker, &m);
    let mut foreign = containers::spec(&m, &stack::CACHE, "x", "1", vec![]);
    foreign
        .labels
        .insert(stack::LABEL_DEPLOY.into(), "/elsewhere".into());
    f.add_container(&m.container(&stack::CACHE), foreign, "running");
    let e = start::start(&f, &testkit::NoSystemd, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("is not part of the deploy"),
        "{e:#}"
    );
    assert!(f.calls_of("rm").is_empty(), "removed a foreign container");
}

/// `m` in Quadlet mode.
fn quadlet(m: &Manifest) -> Manifest {
    let mut m = m.clone();
    m.quadlet = true;
    m.systemd = true;
    m
}

#[tokio::test]
async fn quadlet_mode_installs_the_units_and_starts_them_in_order() {
    let (_t, m) = testkit::lab();
    let m = quadlet(&m);
    let f = testkit::engine_with_images(Kind::Podman, &m);
    // An engine-mode container of this deploy holds a unit's name.
    let web = m.container(&stack::WEB);
    f.add_container(
        &web,
        containers::spec(&m, &stack::WEB, "x", "1", vec![]),
        "running",
    );
    let units = testkit::Units::new(&f);
    start::start(&f, &units, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(f.calls_of("rm"), std::slice::from_ref(&web));
    let mut want = vec!["daemon-reload".to_string()];
    want.extend(
        m.services()
            .iter()
            .map(|s| format!("start {}.service", m.container(s))),
    );
    assert_eq!(units.calls(), want);
    let unit = std::fs::read_to_string(units.dir.path().join(format!("{web}.container")));
    assert!(unit
        .unwrap()
        .contains(&format!("Image={}", m.image(&stack::WEB))));
    assert_eq!(f.container(&web).unwrap().status, "running");
}

#[tokio::test]
async fn a_failed_quadlet_deploy_tears_its_units_down_and_says_so() {
    let (_t, m) = testkit::lab();
    let m = quadlet(&m);
    let f = testkit::engine_with_images(Kind::Podman, &m);
    f.behave(&m.image(&stack::WEB), Behaviour::Exits);
    let units = testkit::Units::new(&f);
    let e = start::start(&f, &units, &m, &mut testkit::steps(), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let e = e.to_string();
    let web = m.container(&stack::WEB);
    assert!(e.contains(&format!("(also: journalctl -u {web})")), "{e}");
    let stopped: Vec<String> = m
        .services()
        .iter()
        .rev()
        .map(|s| format!("unit {}.service (stopped)", m.container(s)))
        .collect();
    assert!(
        e.contains(&format!("Tore down: {}, unit file ", stopped.join(", "))),
        "{e}"
    );
    assert!(e.contains("Left behind: nothing."), "{e}");
    assert!(e.contains("The deploy files and data stay in"), "{e}");
    // Nothing systemd would restart is left.
    assert!(std::fs::read_dir(units.dir.path())
        .unwrap()
        .next()
        .is_none());
    assert!(f.container_names().is_empty(), "{:?}", f.container_names());
    assert_eq!(
        units.calls().last().map(String::as_str),
        Some("daemon-reload")
    );
}
