//! `upgrade` against the fake engine: the swap to the new version, and the
//! rollback to the images that ran when the new ones are not healthy.

use std::time::Duration;

use super::*;
use crate::cmd::testkit::{self, TIMEOUT};
use crate::containers::LABEL_VERSION;
use crate::engine::fake::{Behaviour, Fake};
use crate::engine::Kind;
use crate::exit;
use crate::stack;

/// A fake running `old` (deployed at 0.1.0) and holding the 0.2.0 images,
/// and the plan from one to the other.
async fn running() -> (tempfile::TempDir, Fake, Plan) {
    let (t, old) = testkit::lab();
    let f = testkit::engine_with_images(Kind::Docker, &old);
    crate::cmd::deploy::start::start(
        &f,
        &testkit::NoSystemd,
        &old,
        &mut testkit::steps(),
        TIMEOUT,
    )
    .await
    .unwrap();
    let mut new = old.clone();
    new.version = "0.2.0".into();
    for (svc, r) in deploy::wanted(&new) {
        f.add_image(&r, f.image(&old.image(&svc)).unwrap());
    }
    let plan = Plan {
        old,
        new,
        engine: None,
        from: None,
        timeout: TIMEOUT,
        snapshot: None,
    };
    (t, f, plan)
}

async fn swap(f: &Fake, plan: &Plan) -> Result<()> {
    let previous = running_images(f, &plan.old).await.unwrap();
    let env = files::service_env(&plan.new).unwrap();
    swap::swap(f, plan, &previous, &env, &mut testkit::steps()).await
}

/// The image and version label each of `m`'s containers has.
fn running_as(f: &Fake, m: &Manifest) -> Vec<(String, String)> {
    m.services()
        .iter()
        .map(|s| {
            let c = f
                .container(&m.container(s))
                .expect("a container per service");
            (c.spec.image, c.spec.labels[LABEL_VERSION].clone())
        })
        .collect()
}

fn at(m: &Manifest, v: &str) -> Vec<(String, String)> {
    let mut m = m.clone();
    m.version = v.into();
    m.services()
        .iter()
        .map(|s| (m.image(s), v.to_string()))
        .collect()
}

#[tokio::test]
async fn an_upgrade_recreates_every_container_on_the_new_version() {
    let (_t, f, plan) = running().await;
    assert_eq!(running_as(&f, &plan.old), at(&plan.old, "0.1.0"));
    swap(&f, &plan).await.unwrap();
    assert_eq!(running_as(&f, &plan.new), at(&plan.new, "0.2.0"));
}

#[tokio::test]
async fn an_unhealthy_new_version_rolls_back_to_the_images_that_ran() {
    let (_t, f, plan) = running().await;
    f.behave(&plan.new.image(&stack::WEB), Behaviour::Exits);
    let e = swap(&f, &plan).await.unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let e = e.to_string();
    let web = plan.old.container(&stack::WEB);
    assert!(
        e.starts_with(&format!(
            "upgrade to 0.2.0 failed; rolled back to bty 0.1.0 (healthy). Cause:\n\
             bty-web ({web}) is not healthy: exited (restarts: 0)\n"
        )),
        "{e}"
    );
    assert_eq!(running_as(&f, &plan.old), at(&plan.old, "0.1.0"));
}

#[tokio::test]
async fn a_rollback_that_is_not_healthy_either_says_so() {
    let (_t, f, plan) = running().await;
    f.behave(&plan.new.image(&stack::WEB), Behaviour::Exits);
    f.behave(&plan.old.image(&stack::CACHE), Behaviour::NeverHealthy);
    let e = swap(&f, &plan).await.unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let cache = plan.old.container(&stack::CACHE);
    assert!(
        e.to_string().starts_with(&format!(
            "upgrade to 0.2.0 failed AND the rollback to 0.1.0 is not healthy: withcache \
             ({cache}) is not healthy: starting after 0s"
        )),
        "{e}"
    );
    assert!(e.to_string().contains("inspect with `bty-lab logs"), "{e}");
}

#[tokio::test]
async fn a_new_container_that_cannot_be_made_rolls_back_too() {
    let (_t, f, mut plan) = running().await;
    plan.new.version = "0.3.0".into(); // no such images
    let e = swap(&f, &plan).await.unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Failure, "{e:#}");
    let e = e.to_string();
    assert!(e.contains("rolled back to bty 0.1.0 (healthy)"), "{e}");
    assert!(e.contains("creating container"), "{e}");
    assert_eq!(running_as(&f, &plan.old), at(&plan.old, "0.1.0"));
}

#[tokio::test]
async fn the_images_to_roll_back_to_are_those_that_run() {
    let (_t, f, plan) = running().await;
    // A container running another tag than the manifest's (an earlier
    // rollback, a hand-made change): that tag is what comes back.
    let name = plan.old.container(&stack::CACHE);
    let mut spec = f.container(&name).unwrap().spec;
    spec.image = "ghcr.io/bty-rs/withcache:0.0.9".into();
    f.add_container(&name, spec, "running");
    let prev = running_images(&f, &plan.old).await.unwrap();
    assert_eq!(prev[0].1, "ghcr.io/bty-rs/withcache:0.0.9");
    assert_eq!(prev[1].1, plan.old.image(&stack::WEB));
    // No container: the manifest's image.
    let empty = Fake::new(Kind::Docker);
    let prev = running_images(&empty, &plan.old).await.unwrap();
    assert_eq!(prev[0].1, plan.old.image(&stack::CACHE));
    let _ = Duration::ZERO;
}

/// `running()`'s deploy in Quadlet mode, its units installed and started.
async fn running_units(units: &testkit::Units<'_>, f: &Fake, plan: &mut Plan) {
    for m in [&mut plan.old, &mut plan.new] {
        m.quadlet = true;
        m.systemd = true;
    }
    let steps = &mut testkit::steps();
    crate::cmd::deploy::start::start(f, units, &plan.old, steps, TIMEOUT)
        .await
        .unwrap();
}

/// The image the installed unit of `svc` runs.
fn unit_image(units: &testkit::Units<'_>, m: &Manifest, svc: &stack::Service) -> String {
    let file = units.dir.path().join(crate::quadlet::unit_file(m, svc));
    let text = std::fs::read_to_string(file).unwrap();
    let image = text.lines().find_map(|l| l.strip_prefix("Image="));
    image.unwrap().to_string()
}

#[tokio::test]
async fn a_quadlet_upgrade_restarts_the_units_on_the_new_images() {
    let (_t, f, mut plan) = running().await;
    let units = testkit::Units::new(&f);
    running_units(&units, &f, &mut plan).await;
    units::swap(&f, &units, &plan).await.unwrap();
    for svc in plan.new.services() {
        assert_eq!(unit_image(&units, &plan.new, &svc), plan.new.image(&svc));
        let c = f.container(&plan.new.container(&svc)).unwrap();
        assert_eq!(c.spec.image, plan.new.image(&svc));
    }
    let restarts = units
        .calls()
        .iter()
        .filter(|c| c.starts_with("restart "))
        .count();
    assert_eq!(restarts, 3);
}

#[tokio::test]
async fn an_unhealthy_quadlet_upgrade_puts_the_old_unit_files_back() {
    let (_t, f, mut plan) = running().await;
    let units = testkit::Units::new(&f);
    running_units(&units, &f, &mut plan).await;
    f.behave(&plan.new.image(&stack::CACHE), Behaviour::NeverHealthy);
    let e = units::swap(&f, &units, &plan).await.unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Unhealthy);
    let e = e.to_string();
    assert!(
        e.starts_with("upgrade to 0.2.0 failed; rolled back to bty 0.1.0 (healthy)"),
        "{e}"
    );
    for svc in plan.old.services() {
        assert_eq!(unit_image(&units, &plan.old, &svc), plan.old.image(&svc));
        let c = f.container(&plan.old.container(&svc)).unwrap();
        assert_eq!(
            (c.spec.image, c.status),
            (plan.old.image(&svc), "running".into())
        );
    }
}
