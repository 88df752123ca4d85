//! Which user operations make xray's users the desired set: a pure
//! function of what was applied and what is wanted, so the server actor
//! only carries the operations out.
//!
//! xray cannot change a user in place: a user whose id or flow changed is
//! removed and added again (removes go first). A user xray has that this
//! agent did not put there ([`Applied::unknown`], found by a re-sync) never
//! equals a wanted one, so it is removed, and added back when wanted.

use std::collections::BTreeMap;

use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::{Users, VlessUser};

/// A user as applied to xray.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    id: String,
    flow: VlessFlow,
}

impl Applied {
    /// The user as it is applied when `user` is added.
    pub(super) fn of(user: &VlessUser) -> Applied {
        Applied {
            id: user.id.expose().to_owned(),
            flow: user.flow,
        }
    }

    /// A user as a config file records it (`flow` as xray spells it).
    pub(super) fn recorded(id: String, flow: &str) -> Applied {
        let flow = if flow == VlessFlow::XtlsRprxVision.xray_name() {
            VlessFlow::XtlsRprxVision
        } else {
            VlessFlow::None
        };
        Applied { id, flow }
    }

    /// Whether `user` is applied as it is (same id and flow).
    pub(super) fn is(&self, user: &VlessUser) -> bool {
        self.flow == user.flow && self.id == user.id.expose()
    }

    /// A user found in xray that this agent did not put there.
    pub(super) fn unknown() -> Applied {
        Applied {
            id: String::new(),
            flow: VlessFlow::None,
        }
    }
}

/// The operations that turn `applied` into `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct UserChanges<'a> {
    /// Emails to remove: not desired, or desired with another id or flow.
    pub removes: Vec<String>,
    /// Users to add: not applied, or removed above for a change.
    pub adds: Vec<&'a VlessUser>,
}

/// What to remove from and add to xray (emails in order, adds in `desired`
/// order). Linear in both sets plus a lookup per user.
pub(super) fn user_changes<'a>(
    applied: &BTreeMap<String, Applied>,
    desired: &'a Users,
) -> UserChanges<'a> {
    let removes: Vec<String> = applied
        .iter()
        .filter(|(email, applied)| desired.get(email).is_none_or(|user| !applied.is(user)))
        .map(|(email, _)| email.clone())
        .collect();
    let adds = desired
        .iter()
        .filter(|user| {
            applied
                .get(&user.email)
                .is_none_or(|applied| !applied.is(user))
        })
        .collect();
    UserChanges { removes, adds }
}

/// [`user_changes`] when xray is known to hold exactly `base` (the set
/// the last complete sync applied): only the users that differ between
/// `base` and `desired` are looked at, so one key added among 100,000 costs
/// one user. The same answer as `user_changes(applied, desired)` whenever
/// `applied` is `base`.
pub(super) fn user_changes_since<'a>(
    applied: &BTreeMap<String, Applied>,
    base: &Users,
    desired: &'a Users,
) -> UserChanges<'a> {
    let (upserted, removed) = base.changes_to(desired);
    let mut removes: Vec<String> = removed
        .into_iter()
        .chain(upserted.iter().map(|u| u.email.clone()))
        .filter(|email| {
            applied
                .get(email)
                .is_some_and(|a| desired.get(email).is_none_or(|user| !a.is(user)))
        })
        .collect();
    removes.sort();
    removes.dedup();
    let adds = upserted
        .iter()
        .filter_map(|u| desired.get(&u.email))
        .filter(|user| applied.get(&user.email).is_none_or(|a| !a.is(user)))
        .collect();
    UserChanges { removes, adds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crds::wire::SecretValue;

    fn user(email: &str, id: &str, flow: VlessFlow) -> VlessUser {
        VlessUser {
            email: email.into(),
            id: SecretValue(id.into()),
            flow,
        }
    }

    fn applied(users: &[&VlessUser]) -> BTreeMap<String, Applied> {
        users
            .iter()
            .map(|u| (u.email.clone(), Applied::of(u)))
            .collect()
    }

    const V: VlessFlow = VlessFlow::XtlsRprxVision;

    /// `user_changes_since` gives `user_changes`'s answer when xray holds
    /// the base set, for every pair of sets from a small universe.
    #[test]
    fn changes_since_a_synced_base_equal_the_full_comparison() {
        let universe: Vec<VlessUser> = ["a", "b", "c"]
            .iter()
            .flat_map(|email| {
                [("1", V), ("2", V), ("1", VlessFlow::None)].map(|(id, flow)| user(email, id, flow))
            })
            .collect();
        // Every set: for each email, absent or one of its three versions.
        let sets: Vec<Users> = (0..64u32)
            .map(|mut code| {
                let mut set = Users::new();
                for chunk in universe.chunks(3) {
                    let pick = (code % 4) as usize;
                    code /= 4;
                    if pick > 0 {
                        set.insert(chunk[pick - 1].clone());
                    }
                }
                set
            })
            .collect();
        for base in &sets {
            let held = applied(&base.iter().collect::<Vec<_>>());
            for desired in &sets {
                let full = user_changes(&held, desired);
                let since = user_changes_since(&held, base, desired);
                assert_eq!(since, full, "base {base:?} → desired {desired:?}");
            }
        }
    }

    #[test]
    fn a_recorded_flow_reads_as_xray_spells_it() {
        assert_eq!(
            Applied::recorded("1".into(), "xtls-rprx-vision"),
            Applied::of(&user("a", "1", V))
        );
        assert_eq!(
            Applied::recorded("1".into(), ""),
            Applied::of(&user("a", "1", VlessFlow::None))
        );
    }

    #[test]
    fn each_kind_of_difference_gives_its_operations() {
        let alice = user("alice", "1", V);
        let bob = user("bob", "2", V);
        let bob_new_id = user("bob", "3", V);
        let bob_no_flow = user("bob", "2", VlessFlow::None);
        let carol = user("carol", "4", V);
        struct Case<'a> {
            name: &'a str,
            applied: BTreeMap<String, Applied>,
            desired: Vec<VlessUser>,
            removes: Vec<&'a str>,
            adds: Vec<&'a str>,
        }
        let mut unknown = applied(&[&alice]);
        unknown.insert("bob".into(), Applied::unknown());
        let cases = [
            Case {
                name: "in step",
                applied: applied(&[&alice, &bob]),
                desired: vec![alice.clone(), bob.clone()],
                removes: vec![],
                adds: vec![],
            },
            Case {
                name: "a new user",
                applied: applied(&[&alice]),
                desired: vec![alice.clone(), carol.clone()],
                removes: vec![],
                adds: vec!["carol"],
            },
            Case {
                name: "a user no longer desired",
                applied: applied(&[&alice, &bob]),
                desired: vec![alice.clone()],
                removes: vec!["bob"],
                adds: vec![],
            },
            Case {
                name: "a rotated id is removed and added again",
                applied: applied(&[&alice, &bob]),
                desired: vec![alice.clone(), bob_new_id.clone()],
                removes: vec!["bob"],
                adds: vec!["bob"],
            },
            Case {
                name: "a changed flow is removed and added again",
                applied: applied(&[&bob]),
                desired: vec![bob_no_flow.clone()],
                removes: vec!["bob"],
                adds: vec!["bob"],
            },
            Case {
                name: "a user xray has that the agent did not add is replaced",
                applied: unknown,
                desired: vec![alice.clone(), bob.clone()],
                removes: vec!["bob"],
                adds: vec!["bob"],
            },
            Case {
                name: "nothing desired removes everything",
                applied: applied(&[&alice, &bob]),
                desired: vec![],
                removes: vec!["alice", "bob"],
                adds: vec![],
            },
        ];
        for case in &cases {
            let desired = Users::from(case.desired.clone());
            let changes = user_changes(&case.applied, &desired);
            let adds: Vec<&str> = changes.adds.iter().map(|u| u.email.as_str()).collect();
            assert_eq!(changes.removes, case.removes, "{}: removes", case.name);
            assert_eq!(adds, case.adds, "{}: adds", case.name);
        }
    }
}
