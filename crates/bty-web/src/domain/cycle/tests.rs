//! The cycle's steps one by one, on an in-memory database, and the
//! preview against the contact it predicts.

use crate::db::sql::Conn;
use bty_proto::plan::{DoneReport, LegacyStatusKind, Phase, ProgressReport};
use bty_proto::BootMode;

use super::contact::{contact, Visit};
use super::inventory::{booted, check};
use super::reports::{check_token, done, legacy_status, progress, refusal};
use super::{preview, Answer, AnswerKind};
use crate::db::cycles::{self, Cycle, CycleState};
use crate::db::machines;
use crate::domain::bus::BusMsg;
use crate::domain::decide::{Contact, CycleChoice, Offer, ParkWhy};
use crate::domain::test_support::{conn, mac, put, settings, snapshot};
use crate::domain::DomainError;

const IP: &str = "192.0.2.7";

fn pxe(c: &mut Conn, max: u32) -> (super::Contacted, Vec<BusMsg>) {
    contact(c, mac(), IP, Contact::Pxe, max, &snapshot()).unwrap()
}

fn current(c: &Conn) -> Option<Cycle> {
    let m = machines::get(c, mac()).unwrap().unwrap();
    cycles::current(c, mac(), m.arm_gen).unwrap()
}

fn kinds(bus: &[BusMsg]) -> Vec<String> {
    bus.iter()
        .filter_map(|m| match m {
            BusMsg::Event(e) => Some(e.kind.clone()),
            _ => None,
        })
        .collect()
}

/// The preview, then the contact: the same answer (a cycle the contact
/// opens shows as id 0 in the preview).
fn predicted(c: &mut Conn, max: u32) -> Answer {
    let m = machines::get(c, mac()).unwrap().unwrap();
    let p = preview(&m, current(c).as_ref(), &snapshot(), max).unwrap();
    let (r, _) = pxe(c, max);
    let mut served = r.answer().unwrap();
    if let (true, AnswerKind::Flash(sc)) = (p.new_cycle, &mut served.kind) {
        sc.id = 0;
    }
    assert_eq!(p.answer, served, "preview drifted from the contact");
    served
}

#[test]
fn preview_predicts_every_kind_of_answer() {
    let mut c = conn();
    pxe(&mut c, 2); // registers in inventory mode
    assert_eq!(predicted(&mut c, 2).kind, AnswerKind::Inventory);
    machines::set_inventory_local_next(&c, mac(), true).unwrap();
    let local = predicted(&mut c, 2).kind;
    assert!(matches!(local, AnswerKind::Local { drive, .. } if drive == "0x80"));
    put(&c, &settings(BootMode::FlashOnce));
    let new = predicted(&mut c, 2).kind;
    assert!(matches!(new, AnswerKind::Flash(sc) if sc.id == 0 && sc.attempt == 1));
    let again = predicted(&mut c, 2).kind;
    assert!(
        matches!(&again, AnswerKind::Flash(sc) if sc.id == 1),
        "{again:?}"
    );
    booted(&mut c, mac(), IP, "k").unwrap();
    let retry = predicted(&mut c, 2).kind;
    assert!(
        matches!(&retry, AnswerKind::Flash(sc) if sc.attempt == 2),
        "{retry:?}"
    );
    booted(&mut c, mac(), IP, "k").unwrap();
    let parked = predicted(&mut c, 2).kind;
    let want = "2 flash attempts did not end in done ok (limit flash.max_attempts = 2)";
    assert_eq!(
        parked,
        AnswerKind::Parked {
            reason: want.into()
        }
    );
    assert_eq!(predicted(&mut c, 2).kind, parked, "stays parked");
}

#[test]
fn arrive_registers_an_unknown_mac_in_inventory_mode() {
    let c = conn();
    let v = Visit::arrive(&c, mac(), IP, Contact::Plan).unwrap();
    assert_eq!(v.machine.boot_mode, BootMode::Inventory);
    assert_eq!(v.machine.last_seen_ip.as_deref(), Some(IP));
    assert!(v.changed && v.current.is_none());
    assert_eq!(kinds(&v.j.bus), ["machine.discovered"]);
    // Known now: noted, not registered again.
    let v = Visit::arrive(&c, mac(), IP, Contact::Pxe).unwrap();
    assert!(!v.changed && v.j.bus.is_empty());
}

#[test]
fn park_closes_the_open_cycle_and_says_why() {
    let mut c = conn();
    put(&c, &settings(BootMode::FlashAlways));
    pxe(&mut c, 1);
    booted(&mut c, mac(), IP, "k").unwrap();
    let mut v = Visit::arrive(&c, mac(), IP, Contact::Pxe).unwrap();
    let why = v.park(Offer::Park(ParkWhy::ImageVanished), 1).unwrap();
    assert_eq!(
        why,
        "a flash was under way (cycle state booted) and its image or binding is no longer usable"
    );
    assert!(v.flash_abandoned && v.changed);
    assert_eq!(kinds(&v.j.bus), ["machine.parked"]);
    let c1 = cycles::get(&c, 1).unwrap().unwrap();
    assert_eq!(c1.state, CycleState::Failed);
    let m = machines::get(&c, mac()).unwrap().unwrap();
    assert_eq!(m.parked_reason.as_deref(), Some(why.as_str()));
}

#[test]
fn take_cycle_reuses_and_a_plan_starts_flashing() {
    let mut c = conn();
    put(&c, &settings(BootMode::FlashOnce));
    pxe(&mut c, 3);
    let mut v = Visit::arrive(&c, mac(), IP, Contact::Plan).unwrap();
    let cy = v.take_cycle(Offer::Flash(CycleChoice::Reuse(1)), None);
    let cy = cy.unwrap().unwrap();
    assert_eq!((cy.id, cy.state), (1, CycleState::Flashing));
    assert!(v.flash_started);
    assert_eq!(kinds(&v.j.bus), ["flash.started"]);
    // A choice decide() never makes is a bug, not a database error.
    let wrong = v.take_cycle(Offer::Flash(CycleChoice::Reuse(9)), None);
    assert!(matches!(wrong, Err(DomainError::Internal(_))), "{wrong:?}");
    let no_image = v.take_cycle(Offer::Flash(CycleChoice::New { attempt: 2 }), None);
    assert!(matches!(no_image, Err(DomainError::Internal(_))));
}

#[test]
fn take_cycle_new_closes_the_open_one_first() {
    let mut c = conn();
    put(&c, &settings(BootMode::FlashOnce));
    pxe(&mut c, 3);
    let snap = snapshot();
    let mut v = Visit::arrive(&c, mac(), IP, Contact::Pxe).unwrap();
    let offer = Offer::Flash(CycleChoice::New { attempt: 2 });
    let cy = v.take_cycle(offer, snap.get("debian-12")).unwrap().unwrap();
    assert_eq!((cy.id, cy.attempt, cy.state), (2, 2, CycleState::Offered));
    assert!(v.flash_abandoned);
    assert_eq!(cy.image_url, "https://images.example/debian-12.img.zst");
    assert_eq!(
        cycles::get(&c, 1).unwrap().unwrap().state,
        CycleState::Failed
    );
    let summary = match v.j.bus.first() {
        Some(BusMsg::Event(e)) => e.summary.clone(),
        other => panic!("{other:?}"),
    };
    assert!(summary.ends_with("(attempt 2, retry after cycle 1 ended offered without done ok)"));
}

fn report(token: &str, bytes_done: u64) -> ProgressReport {
    ProgressReport {
        token: token.into(),
        bytes_done,
        bytes_total: Some(1000),
        phase: Phase::Writing,
        rate: None,
    }
}

fn done_ok(token: &str) -> DoneReport {
    DoneReport {
        token: token.into(),
        ok: true,
        reason: None,
        sha256: None,
        duration_s: None,
    }
}

#[test]
fn reports_need_the_current_token() {
    let mut c = conn();
    assert!(matches!(
        check_token(&c, mac(), "x"),
        Err(DomainError::NotFound(_))
    ));
    put(&c, &settings(BootMode::FlashOnce));
    let t = pxe(&mut c, 3).0.cycle.unwrap().token;
    let early = progress(&mut c, mac(), IP, &report(&t, 1));
    assert!(matches!(early, Err(DomainError::Conflict(m)) if m.contains("not fetched")));
    booted(&mut c, mac(), IP, "k").unwrap();
    let elsewhere = done(&mut c, mac(), "192.0.2.99", &done_ok(&t));
    assert!(matches!(elsewhere, Err(DomainError::Forbidden(_))));
    let empty = check_token(&c, mac(), "");
    assert!(matches!(empty, Err(DomainError::StaleToken(m)) if m.contains("no token")));
    let (p, bus) = progress(&mut c, mac(), IP, &report(&t, 400)).unwrap();
    assert_eq!((p.delta, p.started, bus.len()), (400, true, 1));
    let (p, _) = progress(&mut c, mac(), IP, &report(&t, 1000)).unwrap();
    assert_eq!((p.delta, p.started), (600, false));
    let (closed, _) = done(&mut c, mac(), IP, &done_ok(&t)).unwrap();
    assert_eq!((closed.ok, closed.ack.state.as_str()), (Some(true), "done"));
    // Replayed: acknowledged, nothing changes. Progress: refused.
    let (again, bus) = done(&mut c, mac(), IP, &done_ok(&t)).unwrap();
    assert_eq!((again.ok, again.ack.recorded, bus.len()), (None, false, 0));
    let late = progress(&mut c, mac(), IP, &report(&t, 1000));
    assert!(matches!(late, Err(DomainError::Conflict(m)) if m.contains("already done")));
}

#[test]
fn refusals_say_why() {
    let mut c = conn();
    put(&c, &settings(BootMode::FlashOnce));
    let old = pxe(&mut c, 3).0.cycle.unwrap();
    let mut other = old.clone();
    other.mac = "52:54:00:00:00:01".into();
    let cur = Cycle {
        id: 2,
        ..old.clone()
    };
    let m = mac();
    assert_eq!(
        refusal(m, Some(&other), Some(&cur)),
        "the token belongs to another machine's cycle"
    );
    assert_eq!(
        refusal(m, Some(&old), Some(&cur)),
        "stale token: cycle 1 was replaced by cycle 2 (offered)"
    );
    assert_eq!(
        refusal(m, Some(&old), None),
        "stale token: cycle 1 is no longer current"
    );
    assert_eq!(
        refusal(m, None, Some(&cur)),
        format!("unknown token for {m} (current cycle 2)")
    );
    assert_eq!(refusal(m, None, None), format!("{m} has no flash cycle"));
}

#[test]
fn legacy_status_fails_the_open_cycle_or_changes_nothing() {
    let mut c = conn();
    let fail = LegacyStatusKind::Failed;
    let unknown = legacy_status(&mut c, mac(), IP, fail, None);
    assert!(matches!(unknown, Err(DomainError::NotFound(_))));
    put(&c, &settings(BootMode::FlashOnce));
    let (none, bus) = legacy_status(&mut c, mac(), IP, fail, None).unwrap();
    assert_eq!(
        (none.ok, kinds(&bus)),
        (None, vec!["pxe.status".to_string()])
    );
    pxe(&mut c, 3);
    let kind = LegacyStatusKind::Failed;
    let done = legacy_status(&mut c, mac(), IP, LegacyStatusKind::Done, None);
    assert!(
        matches!(done, Err(DomainError::Conflict(_))),
        "never completes"
    );
    let (failed, _) = legacy_status(&mut c, mac(), IP, kind, Some("x")).unwrap();
    assert_eq!(
        (failed.ok, failed.ack.state.as_str()),
        (Some(false), "failed")
    );
}

#[test]
fn inventory_bodies_are_checked() {
    let ok = serde_json::json!({"disks": [{"name": "vda"}], "nics": [], "extra": 1});
    let inv = check(&ok).unwrap();
    assert_eq!(inv.summary, "1 disk(s), 0 NIC(s)");
    assert!(inv.json.contains("\"extra\":1"));
    for bad in [
        serde_json::json!([1]),
        serde_json::json!({"disks": "vda"}),
        serde_json::json!({"disks": vec![serde_json::json!({"name": "d"}); 257], "nics": []}),
    ] {
        let e = check(&bad).unwrap_err();
        assert!(
            matches!(
                e,
                DomainError::Invalid {
                    field: "inventory",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn plans_follow_the_offer() {
    let mut c = conn();
    let (r, _) = contact(&mut c, mac(), IP, Contact::Plan, 3, &snapshot()).unwrap();
    let plan = r.plan("bty:8080").unwrap();
    assert_eq!(plan.mode, bty_proto::plan::PlanMode::Inventory);
    put(&c, &settings(BootMode::FlashOnce));
    let unbooted = contact(&mut c, mac(), IP, Contact::Plan, 3, &snapshot());
    assert!(
        matches!(unbooted, Err(DomainError::Conflict(_))),
        "no cycle"
    );
    pxe(&mut c, 3);
    let unbooted = contact(&mut c, mac(), IP, Contact::Plan, 3, &snapshot());
    assert!(matches!(unbooted, Err(DomainError::Conflict(_))), "offered");
    booted(&mut c, mac(), IP, "k").unwrap();
    let other = contact(&mut c, mac(), "192.0.2.99", Contact::Plan, 3, &snapshot());
    assert!(
        matches!(other, Err(DomainError::Forbidden(_))),
        "another address"
    );
    let (r, _) = contact(&mut c, mac(), IP, Contact::Plan, 3, &snapshot()).unwrap();
    let plan = r.plan("bty:8080").unwrap();
    assert_eq!(plan.mode, bty_proto::plan::PlanMode::Flash);
    let report = plan.report.unwrap();
    assert_eq!(report.done, "http://bty:8080/pxe/52-54-00-12-34-56/done");
    assert_eq!(plan.token, r.cycle.map(|c| c.token));
}

#[test]
fn a_large_inventory_is_stored_without_its_extra_keys() {
    let big = "x".repeat(super::inventory::MAX_STORED);
    let body = serde_json::json!({"disks": [{"name": "vda"}], "nics": [], "lshw": big});
    let inv = check(&body).unwrap();
    assert!(inv.json.len() <= super::inventory::MAX_STORED);
    assert!(
        !inv.json.contains("lshw") && inv.json.contains("vda"),
        "{}",
        inv.json
    );
}
