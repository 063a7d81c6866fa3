//! The fleet's answer to the campaigns' blast-radius guard
//! (`campaign/blast.rs`): which containers are unhealthy or stopped now,
//! across the whole fleet. Each node's [`Digest`](super::Digest) counts its
//! bad containers, so only the nodes that have one are unpacked: at 10,000
//! nodes a look costs a walk over the digests plus the few sections that
//! matter, and the answer is cut at a fixed size whatever happens (the
//! campaign's baseline aside: it is bounded by the campaign's record).

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::model::{Container, ContainerHealth, ContainerState};

use super::held::Held;

/// The most bad containers one look lists (see [`BadContainers::cut`]),
/// those of the campaign's baseline not counted. A fleet with more than
/// this many newly bad at once is past what a guard that names containers
/// can say: the nodes past the cut are not judged until fewer are bad.
pub const MAX_BAD_CONTAINERS: usize = 1_000;

/// Containers by node: a campaign's baseline, what was bad at its start.
pub type ByNode = BTreeMap<String, BTreeSet<String>>;

/// Unhealthy (its health check fails), or should run and does not (exited,
/// dead, restart-looping: [`Container::is_down`]).
pub fn is_bad(c: &Container) -> bool {
    c.health == ContainerHealth::Unhealthy || c.is_down()
}

/// One container that is bad now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadContainer {
    pub node: String,
    pub name: String,
    pub state: ContainerState,
    pub health: ContainerHealth,
}

impl BadContainer {
    /// What is wrong with it: `unhealthy`, or the state it stopped in.
    pub fn what(&self) -> &'static str {
        match self.state {
            ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting => {
                self.state.as_str()
            }
            _ => "unhealthy",
        }
    }
}

/// One look at the fleet's bad containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BadContainers {
    /// In (node, name) order; at most the cap, plus those of the baseline
    /// the look was given.
    pub items: Vec<BadContainer>,
    /// Nodes whose containers are not known now: offline (what they last
    /// said may be stale), or their container engine unreachable.
    pub unknown: BTreeSet<String>,
    /// The list is cut: this node's containers and those of every node
    /// after it (in name order) are not all listed.
    pub cut: Option<String>,
}

impl BadContainers {
    /// Whether this look says everything about `node`'s containers: a
    /// container of it that is not listed is well (or not there).
    pub fn knows(&self, node: &str) -> bool {
        !self.unknown.contains(node) && self.cut.as_deref().is_none_or(|cut| node < cut)
    }
}

/// The bad containers of `nodes` (name, online, what the fleet holds of
/// its reports; in name order), at most `cap` of those not in `baseline`.
/// The baseline's are listed (the guard must see them well to judge them
/// again) but not counted: containers broken long before a campaign would
/// otherwise fill the cap and blind the guard past it.
pub fn collect<'a>(
    nodes: impl Iterator<Item = (&'a str, bool, Option<&'a Held>)>,
    cap: usize,
    baseline: &ByNode,
) -> BadContainers {
    let mut out = BadContainers::default();
    let mut counted = 0;
    for (name, online, held) in nodes {
        if !online || held.is_some_and(|h| h.digest.engine_unavailable) {
            out.unknown.insert(name.to_owned());
            continue;
        }
        let Some(held) = held.filter(|h| h.digest.has_bad_containers()) else {
            continue;
        };
        let Some(section) = held.containers(name) else {
            continue;
        };
        let mut bad: Vec<&Container> = section.containers.iter().filter(|c| is_bad(c)).collect();
        bad.sort_by(|a, b| a.name.cmp(&b.name));
        let taken = baseline.get(name);
        for c in bad {
            if !taken.is_some_and(|cs| cs.contains(&c.name)) {
                if counted == cap {
                    out.cut = Some(name.to_owned());
                    return out;
                }
                counted += 1;
            }
            out.items.push(BadContainer {
                node: name.to_owned(),
                name: c.name.clone(),
                state: c.state,
                health: c.health,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::model::{ContainersSection, Report};

    fn container(name: &str, state: ContainerState, health: ContainerHealth) -> Container {
        Container {
            name: name.into(),
            state,
            health,
            ..Default::default()
        }
    }

    fn held(available: bool, containers: Vec<Container>) -> Held {
        let mut h = Held::default();
        h.merge(Report {
            full: true,
            containers: Some(ContainersSection {
                available,
                containers,
                ..Default::default()
            }),
            ..Default::default()
        });
        h
    }

    #[test]
    fn only_bad_containers_of_nodes_whose_containers_are_known_are_listed() {
        use ContainerHealth::{Healthy, None as NoCheck, Unhealthy};
        use ContainerState::{Exited, Paused, Restarting, Running};
        let cmp1 = held(
            true,
            vec![
                container("nova_compute", Running, Unhealthy),
                container("cron", Running, NoCheck),
                container("fluentd", Exited, NoCheck),
                container("nova_libvirt", Restarting, Healthy),
                container("paused_by_hand", Paused, NoCheck),
            ],
        );
        let cmp2 = held(true, vec![container("nova_compute", Running, Healthy)]);
        let cmp3 = held(false, vec![]);
        let cmp4 = held(true, vec![container("nova_compute", Exited, Unhealthy)]);
        let look = collect(
            [
                ("cmp1", true, Some(&cmp1)),
                ("cmp2", true, Some(&cmp2)),
                ("cmp3", true, Some(&cmp3)),
                ("cmp4", false, Some(&cmp4)),
                ("cmp5", true, None),
            ]
            .into_iter(),
            MAX_BAD_CONTAINERS,
            &ByNode::new(),
        );
        let listed: Vec<(&str, &str, &str)> = look
            .items
            .iter()
            .map(|b| (b.node.as_str(), b.name.as_str(), b.what()))
            .collect();
        assert_eq!(
            listed,
            [
                ("cmp1", "fluentd", "exited"),
                ("cmp1", "nova_compute", "unhealthy"),
                ("cmp1", "nova_libvirt", "restarting"),
            ]
        );
        assert_eq!(
            look.unknown,
            BTreeSet::from(["cmp3".to_owned(), "cmp4".to_owned()]),
            "an unreachable engine and an offline node say nothing"
        );
        assert_eq!(look.cut, None);
        assert!(look.knows("cmp2") && look.knows("cmp5") && !look.knows("cmp4"));
        let dead = BadContainer {
            node: "cmp4".into(),
            name: "nova_compute".into(),
            state: Exited,
            health: Unhealthy,
        };
        assert_eq!(
            dead.what(),
            "exited",
            "stopped says more than its last check"
        );
    }

    #[test]
    fn a_look_is_cut_at_its_cap_and_knows_nothing_past_the_cut() {
        let bad = |n: &str| container(n, ContainerState::Exited, ContainerHealth::None);
        let a = held(true, vec![bad("x"), bad("y")]);
        let b = held(true, vec![bad("x"), bad("y")]);
        let nodes = [("a", true, Some(&a)), ("b", true, Some(&b))];
        let none = ByNode::new();
        let look = collect(nodes.into_iter(), 3, &none);
        assert_eq!(look.items.len(), 3);
        assert_eq!(look.cut.as_deref(), Some("b"));
        assert!(look.knows("a") && !look.knows("b") && !look.knows("c"));
        let whole = collect(nodes.into_iter(), 4, &none);
        assert_eq!((whole.items.len(), whole.cut), (4, None));
    }

    #[test]
    fn the_baseline_is_listed_but_does_not_fill_the_cap() {
        let bad = |n: &str| container(n, ContainerState::Exited, ContainerHealth::None);
        let a = held(true, vec![bad("x"), bad("y"), bad("z")]);
        let b = held(true, vec![bad("w")]);
        let nodes = [("a", true, Some(&a)), ("b", true, Some(&b))];
        let blind = collect(nodes.into_iter(), 2, &ByNode::new());
        assert_eq!(blind.cut.as_deref(), Some("a"), "two old ones fill it");
        let baseline = ByNode::from([(
            "a".to_owned(),
            BTreeSet::from(["x".to_owned(), "y".to_owned()]),
        )]);
        let look = collect(nodes.into_iter(), 2, &baseline);
        let listed: Vec<(&str, &str)> = look
            .items
            .iter()
            .map(|b| (b.node.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(listed, [("a", "x"), ("a", "y"), ("a", "z"), ("b", "w")]);
        assert_eq!(look.cut, None, "b is judged");
        let past = collect(nodes.into_iter(), 1, &baseline);
        assert_eq!((past.items.len(), past.cut.as_deref()), (3, Some("b")));
    }
}
