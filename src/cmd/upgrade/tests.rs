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

/// A bty database at `schema` holding `marker`: a stand-in with only the
/// table restore touches (cycles) and a marker, as the fake engine runs no
/// bty-web to make a real one.
fn bty_db(m: &Manifest, schema: u32, marker: &str) -> std::path::PathBuf {
    let path = m.data_dir.join("bty/state.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS cycles (id INTEGER PRIMARY KEY, state TEXT, ok INTEGER, \
         reason TEXT, finished_at TEXT); CREATE TABLE IF NOT EXISTS marker (v TEXT); \
         DELETE FROM marker;",
    )
    .unwrap();
    c.execute("INSERT INTO marker VALUES (?1)", [marker])
        .unwrap();
    c.pragma_update(None, "user_version", schema).unwrap();
    path
}

fn marker(path: &std::path::Path) -> (u32, String) {
    let c = rusqlite::Connection::open(path).unwrap();
    let v = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (
        v,
        c.query_row("SELECT v FROM marker", [], |r| r.get(0))
            .unwrap(),
    )
}

#[tokio::test]
async fn a_migrating_upgrade_snapshots_first_and_its_rollback_restores_the_databases() {
    let (_t, f, mut plan) = running().await;
    let latest = bty_web::db::schema::LATEST;
    // At the current schema nothing migrates: no snapshot.
    let db = bty_db(&plan.old, latest, "current");
    assert_eq!(
        crate::cmd::backup::pre_upgrade(&plan.old, "0.2.0").unwrap(),
        None
    );
    // One schema behind: the snapshot is written before anything moves.
    bty_db(&plan.old, latest - 1, "before the upgrade");
    let snap = crate::cmd::backup::pre_upgrade(&plan.old, "0.2.0")
        .unwrap()
        .expect("a snapshot");
    let name = snap.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("pre-upgrade-0.1.0-to-0.2.0-"), "{name}");
    assert_eq!(snap.parent().unwrap(), plan.old.dest.join("backups"));
    // The new version migrates the database, then is not healthy.
    bty_db(&plan.old, latest, "migrated by 0.2.0");
    plan.snapshot = Some(snap);
    f.behave(&plan.new.image(&stack::WEB), Behaviour::Exits);
    let e = swap(&f, &plan).await.unwrap_err();
    assert!(
        e.to_string().contains("rolled back to bty 0.1.0 (healthy)"),
        "{e}"
    );
    assert_eq!(running_as(&f, &plan.old), at(&plan.old, "0.1.0"));
    assert_eq!(marker(&db), (latest - 1, "before the upgrade".into()));
    // The migrated one is kept beside it.
    let kept: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.db.pre-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(marker(&kept[0]), (latest, "migrated by 0.2.0".into()));
}

#[tokio::test]
async fn a_rollback_whose_snapshot_is_damaged_says_how_to_restore_by_hand() {
    let (_t, f, mut plan) = running().await;
    let db = bty_db(&plan.old, 1, "migrated");
    let snap = plan.old.dest.join("backups/pre-upgrade-damaged.tar.zst");
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    std::fs::write(&snap, b"not an archive").unwrap();
    plan.snapshot = Some(snap);
    f.behave(&plan.new.image(&stack::WEB), Behaviour::Exits);
    let e = swap(&f, &plan).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("putting the databases back from"), "{e}");
    assert!(e.contains("bty-lab restore"), "{e}");
    // The database it could not replace is untouched.
    assert_eq!(marker(&db), (1, "migrated".into()));
}
