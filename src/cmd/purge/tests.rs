//! `purge` against the fake engine: tolerant of what is gone, honest about
//! what it could not remove, and never destructive unattended.

use super::*;
use crate::cmd::testkit;
use crate::engine::fake::Fake;
use crate::engine::Kind;
use crate::stack;

fn plan(m: &Manifest, images: bool) -> Plan {
    Plan {
        m: m.clone(),
        engine: None,
        data: false,
        all: false,
        images,
        yes: true,
    }
}

/// A fake holding `m`'s deployed stack (network, containers, images) and
/// one container of another deploy.
async fn deployed(m: &Manifest) -> Fake {
    let f = testkit::engine_with_images(Kind::Docker, m);
    crate::cmd::deploy::start::start(
        &f,
        &testkit::NoSystemd,
        m,
        &mut testkit::steps(),
        testkit::TIMEOUT,
    )
    .await
    .unwrap();
    let mut other = containers::spec(m, &stack::WEB, "x", "1", vec![]);
    other
        .labels
        .insert(stack::LABEL_DEPLOY.into(), "/other".into());
    f.add_container("other-bty-web", other, "running");
    f
}

#[tokio::test]
async fn purge_removes_the_stack_and_only_the_stack() {
    let (_t, m) = testkit::lab();
    let f = deployed(&m).await;
    let mut r = Removal::default();
    remove_from_engine(&f, &plan(&m, true), &mut testkit::steps(), &mut r)
        .await
        .unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(f.container_names(), ["other-bty-web"]);
    assert!(f.networks().is_empty());
    for svc in m.services() {
        assert!(f.image(&m.image(&svc)).is_none());
        assert!(r
            .removed
            .contains(&format!("container {}", m.container(&svc))));
        assert!(r.removed.contains(&format!("image {}", m.image(&svc))));
    }
    assert!(r.removed.contains(&format!("network {}", m.network())));
}

#[tokio::test]
async fn purge_is_tolerant_of_what_is_already_gone() {
    let (_t, m) = testkit::lab();
    let f = Fake::new(Kind::Podman);
    let mut r = Removal::default();
    remove_from_engine(&f, &plan(&m, true), &mut testkit::steps(), &mut r)
        .await
        .unwrap();
    assert_eq!(r, Removal::default());
    assert_eq!(report_lines(&r), ["nothing was left to remove"]);
    report(&r).unwrap();
}

#[tokio::test]
async fn purge_reports_what_it_left_behind() {
    let (_t, m) = testkit::lab();
    let f = deployed(&m).await;
    let web = m.container(&stack::WEB);
    f.fail_remove(&web, "engine said (500): device or resource busy");
    let mut r = Removal::default();
    remove_from_engine(&f, &plan(&m, false), &mut testkit::steps(), &mut r)
        .await
        .unwrap();
    assert_eq!(
        r.failed,
        [format!(
            "container {web}: engine said (500): device or resource busy"
        )]
    );
    let lines = report_lines(&r);
    assert!(lines.contains(&format!(
        "  FAILED  container {web}: engine said (500): device or resource busy"
    )));
    assert!(lines.contains(&format!(
        "  removed container {}",
        m.container(&stack::CACHE)
    )));
    let e = report(&r).unwrap_err();
    assert_eq!(e.to_string(), "purge left 1 item(s) behind (listed above)");
    assert_eq!(exit::code_of(&e), exit::Code::Failure);
    assert!(f.container(&web).is_some());
}

#[tokio::test]
async fn podman_s_state_improper_removal_is_retried() {
    let (_t, m) = testkit::lab();
    let f = deployed(&m).await;
    let web = m.container(&stack::WEB);
    f.fail_remove(&web, "container state improper");
    let r = containers::force_remove(&f, &web).await.unwrap_err();
    assert!(r.message.contains("state improper"));
    assert_eq!(f.calls_of("rm").len(), 11, "not retried ten times");
    assert_eq!(f.kind(), Kind::Docker);
}

#[test]
fn destructive_purges_need_a_yes() {
    let (_t, m) = testkit::lab();
    let mut p = plan(&m, false);
    p.yes = false;
    p.confirm(false).unwrap();
    p.data = true;
    let e = p.confirm(false).unwrap_err();
    assert_eq!(exit::code_of(&e), exit::Code::Refused);
    assert!(e.to_string().contains("--yes"), "{e}");
    p.yes = true;
    p.confirm(false).unwrap();
    let mut all = plan(&m, true);
    all.all = true;
    all.data = true;
    let list = all.list().join("\n");
    assert!(list.contains(&format!("DELETE the deploy directory {}", m.dest.display())));
    assert!(list.contains("remove the images"));
    assert_eq!(all.steps(), 4);
}
