//! The boot decision: a pure function from a machine's state to what its
//! PXE contact (or its plan request) gets. No I/O here;
//! [`crate::domain::cycle`] reads the state, calls [`decide`] and applies
//! the effects in one transaction, and its preview calls it on the same
//! inputs without applying anything.

use bty_proto::BootMode;

use crate::db::cycles::CycleState;

/// Which endpoint the machine contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// `GET /pxe/{mac}`: iPXE asks what to boot.
    Pxe,
    /// `GET /pxe/{mac}/plan`: the agent asks what to do.
    Plan,
}

/// What [`decide`] needs to know about the current cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleFacts {
    /// Cycle id.
    pub id: i64,
    /// Its state.
    pub state: CycleState,
    /// Its attempt number.
    pub attempt: u32,
    /// flash-always: the disk boot after it has been served.
    pub local_served: bool,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// The machine's mode.
    pub mode: BootMode,
    /// An image is bound.
    pub has_image: bool,
    /// A target serial is set.
    pub has_target: bool,
    /// The bound image is in the catalog with a usable format.
    pub image_available: bool,
    /// Its sha256 and size are known (a plan without them is never made).
    pub image_measured: bool,
    /// The machine is parked.
    pub parked: bool,
    /// Inventory mode: the next contact boots the disk.
    pub inventory_local_next: bool,
    /// The newest cycle of the current arming, if any.
    pub current: Option<CycleFacts>,
    /// `[flash] max_attempts`.
    pub max_attempts: u32,
}

/// Why a contact gets the local disk (or, for a plan, `exit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWhy {
    /// Mode `ipxe-exit`.
    ModeExit,
    /// Inventory mode, inventory was posted: the disk's turn.
    AfterInventory,
    /// flash-once and the flash is done.
    FlashedOnce,
    /// flash-always: the disk's turn after a finished flash.
    AfterFlash,
    /// Plan asked again after this cycle's `done`.
    CycleDone,
    /// Flash mode without an image bound.
    NoImage,
    /// Flash mode without a target disk serial.
    NoTarget,
    /// The bound image is not in the catalog (nothing was written yet).
    ImageUnavailable,
    /// The bound image's sha256 or size is not known yet (withcache has
    /// not measured it): the disk boots until it has.
    ImageNotMeasured,
}

impl LocalWhy {
    /// Human text; server-made only, so it is safe inside an iPXE script.
    pub const fn text(self) -> &'static str {
        match self {
            LocalWhy::ModeExit => "boot_mode is ipxe-exit",
            LocalWhy::AfterInventory => "inventory was reported, this boot is the local disk",
            LocalWhy::FlashedOnce => "flashed once already, set the machine again to re-flash",
            LocalWhy::AfterFlash => "the flash is done, this boot is the local disk",
            LocalWhy::CycleDone => "this flash cycle is done, reboot to the local disk",
            LocalWhy::NoImage => "flash mode but no image is bound",
            LocalWhy::NoTarget => "flash mode but no target_disk_serial is set",
            LocalWhy::ImageUnavailable => "the bound image is not in the catalog",
            LocalWhy::ImageNotMeasured => {
                "the bound image's sha256 and size are not known yet (withcache has not measured it)"
            }
        }
    }

    /// Worth an event of its own (an operator has something to fix).
    pub const fn is_problem(self) -> bool {
        matches!(
            self,
            LocalWhy::NoImage
                | LocalWhy::NoTarget
                | LocalWhy::ImageUnavailable
                | LocalWhy::ImageNotMeasured
        )
    }
}

/// Why a machine is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkWhy {
    /// Already parked earlier.
    Already,
    /// `max_attempts` flashes did not reach `done ok`.
    AttemptsExhausted,
    /// A flash was under way and its image (or binding) is no longer usable.
    ImageVanished,
}

/// Which cycle a flash offer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleChoice {
    /// The current cycle again (id).
    Reuse(i64),
    /// A new cycle with this attempt number.
    New {
        /// Attempt number of the new cycle.
        attempt: u32,
    },
}

/// The answer, independent of how it is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// PXE: the local-boot script. Plan: `exit`.
    Local(LocalWhy),
    /// PXE: the flash chain. Plan: `flash`.
    Flash(CycleChoice),
    /// PXE: the netboot env for inventory. Plan: `inventory`.
    Inventory,
    /// PXE: a script that waits and asks again. Plan: `interactive`.
    Park(ParkWhy),
}

impl Offer {
    /// Label for metrics and events.
    pub const fn kind(&self) -> &'static str {
        match self {
            Offer::Local(_) => "local",
            Offer::Flash(_) => "flash",
            Offer::Inventory => "inventory",
            Offer::Park(_) => "parked",
        }
    }
}

/// State changes the decision implies besides the offer itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// Clear the inventory alternation flag.
    pub clear_inventory_local: bool,
    /// Mark this cycle's disk boot as served (flash-always).
    pub mark_local_served: Option<i64>,
    /// Park the machine now.
    pub park: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the machine gets.
    pub offer: Offer,
    /// What must change.
    pub effects: Effects,
}

fn plain(offer: Offer) -> Decision {
    Decision {
        offer,
        effects: Effects::default(),
    }
}

/// Decide what a contact gets. See docs/bty-web.md "The flash cycle".
pub fn decide(i: &Inputs, contact: Contact) -> Decision {
    match i.mode {
        BootMode::IpxeExit => plain(Offer::Local(LocalWhy::ModeExit)),
        BootMode::Inventory => match contact {
            Contact::Pxe if i.inventory_local_next => Decision {
                offer: Offer::Local(LocalWhy::AfterInventory),
                effects: Effects {
                    clear_inventory_local: true,
                    ..Effects::default()
                },
            },
            _ => plain(Offer::Inventory),
        },
        BootMode::FlashOnce | BootMode::FlashAlways => decide_flash(i, contact),
    }
}

fn decide_flash(i: &Inputs, contact: Contact) -> Decision {
    if i.parked {
        return plain(Offer::Park(ParkWhy::Already));
    }
    if let Some(why) = unbound(i, contact) {
        return plain(Offer::Local(why));
    }
    let Some(c) = i.current else {
        return fresh(i, 1);
    };
    match (contact, c.state) {
        (_, CycleState::Cancelled) => fresh(i, 1),
        // Nothing of it ran yet (PXE), or the agent asks for its plan.
        (Contact::Pxe, CycleState::Offered)
        | (Contact::Plan, CycleState::Offered | CycleState::Booted | CycleState::Flashing) => {
            reuse(i, c)
        }
        (Contact::Pxe, CycleState::Booted | CycleState::Flashing | CycleState::Failed)
        | (Contact::Plan, CycleState::Failed) => retry(i, c),
        (Contact::Plan, CycleState::Done) => plain(Offer::Local(LocalWhy::CycleDone)),
        (Contact::Pxe, CycleState::Done) => after_done(i, c),
    }
}

/// No image or no target bound: the local disk, unless a PXE contact
/// follows a cycle that may have touched the disk (that one retries or
/// parks instead).
fn unbound(i: &Inputs, contact: Contact) -> Option<LocalWhy> {
    let unfinished = matches!(
        i.current.map(|c| c.state),
        Some(CycleState::Booted | CycleState::Flashing | CycleState::Failed)
    );
    if unfinished && contact == Contact::Pxe {
        return None;
    }
    if !i.has_image {
        Some(LocalWhy::NoImage)
    } else if !i.has_target {
        Some(LocalWhy::NoTarget)
    } else {
        None
    }
}

/// A new cycle with this attempt number, if the image is there.
fn fresh(i: &Inputs, attempt: u32) -> Decision {
    match not_flashable(i) {
        None => plain(Offer::Flash(CycleChoice::New { attempt })),
        Some(why) => plain(Offer::Local(why)),
    }
}

/// Why the bound image cannot be flashed now, if it cannot.
fn not_flashable(i: &Inputs) -> Option<LocalWhy> {
    if !i.image_available {
        Some(LocalWhy::ImageUnavailable)
    } else if !i.image_measured {
        Some(LocalWhy::ImageNotMeasured)
    } else {
        None
    }
}

/// The current cycle again, if the image is still there. Otherwise the
/// local disk: nothing was written yet (PXE), or the agent reboots and
/// its next PXE contact parks the machine if the disk may have been
/// touched (plan).
fn reuse(i: &Inputs, c: CycleFacts) -> Decision {
    match not_flashable(i) {
        None => plain(Offer::Flash(CycleChoice::Reuse(c.id))),
        Some(why) => plain(Offer::Local(why)),
    }
}

/// A cycle that may have written to the disk but did not end in `done
/// ok`: never the local disk. Retry, or park when out of attempts or
/// when the image (or binding) is gone.
fn retry(i: &Inputs, c: CycleFacts) -> Decision {
    let usable = i.has_image && i.has_target && not_flashable(i).is_none();
    let park = |why| Decision {
        offer: Offer::Park(why),
        effects: Effects {
            park: true,
            ..Effects::default()
        },
    };
    if c.attempt >= i.max_attempts {
        park(ParkWhy::AttemptsExhausted)
    } else if !usable {
        park(ParkWhy::ImageVanished)
    } else {
        plain(Offer::Flash(CycleChoice::New {
            attempt: c.attempt + 1,
        }))
    }
}

/// PXE after a finished flash: flash-once boots the disk for good;
/// flash-always boots it once, then flashes again.
fn after_done(i: &Inputs, c: CycleFacts) -> Decision {
    match i.mode {
        BootMode::FlashAlways if !c.local_served => Decision {
            offer: Offer::Local(LocalWhy::AfterFlash),
            effects: Effects {
                mark_local_served: Some(c.id),
                ..Effects::default()
            },
        },
        BootMode::FlashAlways => fresh(i, 1),
        _ => plain(Offer::Local(LocalWhy::FlashedOnce)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CycleState::*;

    fn base(mode: BootMode) -> Inputs {
        Inputs {
            mode,
            has_image: true,
            has_target: true,
            image_available: true,
            image_measured: true,
            parked: false,
            inventory_local_next: false,
            current: None,
            max_attempts: 3,
        }
    }

    fn cyc(state: CycleState, attempt: u32, local_served: bool) -> Option<CycleFacts> {
        Some(CycleFacts {
            id: 7,
            state,
            attempt,
            local_served,
        })
    }

    const FLASH_MODES: [BootMode; 2] = [BootMode::FlashOnce, BootMode::FlashAlways];
    const STATES: [CycleState; 6] = [Offered, Booted, Flashing, Done, Failed, Cancelled];

    #[test]
    fn an_unmeasured_image_is_never_flashed() {
        for mode in FLASH_MODES {
            let mut i = base(mode);
            i.image_measured = false;
            for contact in [Contact::Pxe, Contact::Plan] {
                for cur in [None, cyc(Offered, 1, false), cyc(Cancelled, 1, false)] {
                    i.current = cur;
                    let d = decide(&i, contact);
                    assert_eq!(d.offer, Offer::Local(LocalWhy::ImageNotMeasured), "{cur:?}");
                }
            }
            i.current = cyc(Flashing, 1, false);
            assert_eq!(
                decide(&i, Contact::Pxe).offer,
                Offer::Park(ParkWhy::ImageVanished)
            );
        }
    }

    #[test]
    fn ipxe_exit_is_always_local_whatever_the_state() {
        for contact in [Contact::Pxe, Contact::Plan] {
            for st in STATES {
                let mut i = base(BootMode::IpxeExit);
                i.current = cyc(st, 3, false);
                i.parked = true;
                assert_eq!(decide(&i, contact).offer, Offer::Local(LocalWhy::ModeExit));
            }
        }
    }

    #[test]
    fn inventory_alternates_on_pxe_and_plan_says_inventory() {
        let mut i = base(BootMode::Inventory);
        assert_eq!(decide(&i, Contact::Pxe).offer, Offer::Inventory);
        assert_eq!(decide(&i, Contact::Plan).offer, Offer::Inventory);
        i.inventory_local_next = true;
        let d = decide(&i, Contact::Pxe);
        assert_eq!(d.offer, Offer::Local(LocalWhy::AfterInventory));
        assert!(d.effects.clear_inventory_local);
        assert_eq!(decide(&i, Contact::Plan).offer, Offer::Inventory);
    }

    #[test]
    fn flash_modes_without_binding_boot_local_with_a_reason() {
        for mode in FLASH_MODES {
            for contact in [Contact::Pxe, Contact::Plan] {
                let mut i = base(mode);
                i.has_image = false;
                assert_eq!(decide(&i, contact).offer, Offer::Local(LocalWhy::NoImage));
                let mut i = base(mode);
                i.has_target = false;
                assert_eq!(decide(&i, contact).offer, Offer::Local(LocalWhy::NoTarget));
                let mut i = base(mode);
                i.image_available = false;
                assert_eq!(
                    decide(&i, contact).offer,
                    Offer::Local(LocalWhy::ImageUnavailable)
                );
            }
        }
    }

    #[test]
    fn no_cycle_starts_attempt_one() {
        for mode in FLASH_MODES {
            for contact in [Contact::Pxe, Contact::Plan] {
                let i = base(mode);
                assert_eq!(
                    decide(&i, contact).offer,
                    Offer::Flash(CycleChoice::New { attempt: 1 })
                );
            }
        }
    }

    #[test]
    fn offered_cycle_is_served_again_without_spending_an_attempt() {
        for mode in FLASH_MODES {
            let mut i = base(mode);
            i.current = cyc(Offered, 2, false);
            assert_eq!(
                decide(&i, Contact::Pxe).offer,
                Offer::Flash(CycleChoice::Reuse(7))
            );
            assert_eq!(
                decide(&i, Contact::Plan).offer,
                Offer::Flash(CycleChoice::Reuse(7))
            );
        }
    }

    #[test]
    fn plan_hands_out_booted_and_flashing_cycles() {
        for mode in FLASH_MODES {
            for st in [Booted, Flashing] {
                let mut i = base(mode);
                i.current = cyc(st, 1, false);
                assert_eq!(
                    decide(&i, Contact::Plan).offer,
                    Offer::Flash(CycleChoice::Reuse(7))
                );
            }
        }
    }

    #[test]
    fn unfinished_cycle_is_never_answered_with_a_local_boot() {
        // The heart of the cycle rules: for every mode, state that may have
        // touched the disk and every attempt count, a PXE contact is a
        // flash or a park, never the local disk.
        for mode in FLASH_MODES {
            for st in [Booted, Flashing, Failed] {
                for attempt in 1..=5 {
                    for available in [true, false] {
                        let mut i = base(mode);
                        i.current = cyc(st, attempt, true);
                        i.image_available = available;
                        let d = decide(&i, Contact::Pxe);
                        assert!(
                            !matches!(d.offer, Offer::Local(_)),
                            "{mode:?} {st:?} attempt {attempt} available {available}: {d:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn crash_mid_cycle_retries_then_parks() {
        for mode in FLASH_MODES {
            for st in [Booted, Flashing, Failed] {
                let mut i = base(mode);
                i.current = cyc(st, 1, false);
                assert_eq!(
                    decide(&i, Contact::Pxe).offer,
                    Offer::Flash(CycleChoice::New { attempt: 2 })
                );
                i.current = cyc(st, 3, false);
                let d = decide(&i, Contact::Pxe);
                assert_eq!(d.offer, Offer::Park(ParkWhy::AttemptsExhausted));
                assert!(d.effects.park);
                i.current = cyc(st, 1, false);
                i.image_available = false;
                let d = decide(&i, Contact::Pxe);
                assert_eq!(d.offer, Offer::Park(ParkWhy::ImageVanished));
                assert!(d.effects.park);
            }
        }
    }

    #[test]
    fn plan_after_failure_retries_in_place() {
        let mut i = base(BootMode::FlashOnce);
        i.current = cyc(Failed, 1, false);
        assert_eq!(
            decide(&i, Contact::Plan).offer,
            Offer::Flash(CycleChoice::New { attempt: 2 })
        );
        i.current = cyc(Failed, 3, false);
        assert_eq!(
            decide(&i, Contact::Plan).offer,
            Offer::Park(ParkWhy::AttemptsExhausted)
        );
    }

    #[test]
    fn parked_machines_stay_parked_until_the_operator_acts() {
        for mode in FLASH_MODES {
            for contact in [Contact::Pxe, Contact::Plan] {
                for st in STATES {
                    let mut i = base(mode);
                    i.parked = true;
                    i.current = cyc(st, 3, false);
                    let d = decide(&i, contact);
                    assert_eq!(d.offer, Offer::Park(ParkWhy::Already));
                    assert!(!d.effects.park);
                }
            }
        }
    }

    #[test]
    fn flash_once_done_is_local_forever() {
        let mut i = base(BootMode::FlashOnce);
        for served in [false, true] {
            i.current = cyc(Done, 1, served);
            let d = decide(&i, Contact::Pxe);
            assert_eq!(d.offer, Offer::Local(LocalWhy::FlashedOnce));
            assert_eq!(d.effects, Effects::default());
            i.image_available = false;
            assert_eq!(
                decide(&i, Contact::Pxe).offer,
                Offer::Local(LocalWhy::FlashedOnce)
            );
            assert_eq!(
                decide(&i, Contact::Plan).offer,
                Offer::Local(LocalWhy::CycleDone)
            );
        }
    }

    #[test]
    fn flash_always_alternates() {
        let mut i = base(BootMode::FlashAlways);
        i.current = cyc(Done, 2, false);
        let d = decide(&i, Contact::Pxe);
        assert_eq!(d.offer, Offer::Local(LocalWhy::AfterFlash));
        assert_eq!(d.effects.mark_local_served, Some(7));
        i.current = cyc(Done, 2, true);
        assert_eq!(
            decide(&i, Contact::Pxe).offer,
            Offer::Flash(CycleChoice::New { attempt: 1 })
        );
        // Disk is good; a missing image just means the disk again.
        i.image_available = false;
        assert_eq!(
            decide(&i, Contact::Pxe).offer,
            Offer::Local(LocalWhy::ImageUnavailable)
        );
        // The plan of a finished cycle never starts another.
        i.image_available = true;
        assert_eq!(
            decide(&i, Contact::Plan).offer,
            Offer::Local(LocalWhy::CycleDone)
        );
    }

    #[test]
    fn cancelled_cycle_counts_as_none() {
        for mode in FLASH_MODES {
            let mut i = base(mode);
            i.current = cyc(Cancelled, 3, false);
            assert_eq!(
                decide(&i, Contact::Pxe).offer,
                Offer::Flash(CycleChoice::New { attempt: 1 })
            );
        }
    }

    #[test]
    fn every_mode_state_contact_combination_is_decided() {
        // Exhaustive sweep: nothing panics, and a local boot is only ever
        // given when the disk is known good or was never touched.
        for mode in BootMode::ALL {
            for contact in [Contact::Pxe, Contact::Plan] {
                for st in STATES.map(Some).into_iter().chain([None]) {
                    for flags in 0..32u8 {
                        let mut i = base(mode);
                        i.has_image = flags & 1 != 0;
                        i.has_target = flags & 2 != 0;
                        i.image_available = flags & 4 != 0;
                        i.parked = flags & 8 != 0;
                        i.inventory_local_next = flags & 16 != 0;
                        i.current = st.and_then(|s| cyc(s, 2, false));
                        let d = decide(&i, contact);
                        if mode.flashes() && contact == Contact::Pxe {
                            if let (Offer::Local(_), Some(s)) = (d.offer, st) {
                                assert!(
                                    matches!(s, Offered | Done | Cancelled),
                                    "{mode:?} {s:?} {flags:b}: {d:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
