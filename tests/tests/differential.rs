//! Differential test: random and mutated frames through the kernel programs
//! and the reference model; every verdict, reason and returned action must
//! agree. A failing
//! frame is printed as hex so that it can become a fixed case.
//!
//! `NETWATCH_DIFF_PACKETS` sets how many frames per direction (default
//! 60,000 for the endpoint policy, so 120,000 per run, and 15,000 for the
//! network-wide policy; per topology for the macvlan programs, default
//! 5,000 in each of 30); `NETWATCH_DIFF_SEED` replays a run.

use std::net::{Ipv4Addr, Ipv6Addr};

use netwatch::{
    datapath::{Hook, TEST_RUN_IFINDEX},
    policy::{
        Cidr, ReferenceModel,
        model::{
            macvlan::{Cookies, HookVerdict},
            uplink_verdict,
        },
    },
};
use netwatch_common::{
    endpoint::policy_flags,
    flow::tcp_flags::SYN,
    reason::{DropReason, Verdict},
};
use netwatch_tests::{
    corpus::{mutate, random_valid_frame},
    fixture::*,
    packets::{Frame, hex},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

#[test]
fn kernel_and_reference_model_agree_on_random_and_mutated_frames() {
    let every_veth_reason: Vec<DropReason> = DropReason::ALL
        .into_iter()
        .filter(|r| *r != DropReason::ProtectedPrefix)
        .collect();
    differential(Harness::standard(), 60_000, 100_000, &every_veth_reason);
}

#[test]
fn kernel_and_reference_model_agree_for_a_network_wide_bridge_policy() {
    // A network-wide policy cannot know each container's MAC.
    let reasons: Vec<DropReason> = DropReason::ALL
        .into_iter()
        .filter(|r| !matches!(r, DropReason::ProtectedPrefix | DropReason::SpoofedMac))
        .collect();
    differential(
        Harness::new(vec![bridge_spec()], host_addresses()),
        15_000,
        25_000,
        &reasons,
    );
}

/// Runs `per_direction` frames each way through `harness`'s kernel programs
/// and model, requiring at least `required` checked frames and each of
/// `reasons` (`None`: forwarded) in at least one frame in a thousand.
fn differential(
    mut harness: Harness,
    per_direction: usize,
    required: usize,
    reasons: &[DropReason],
) {
    // Some random frames are ones the kernel refuses to test-run, hence the
    // margin between `per_direction` and `required`.
    let requested = requested_packets();
    let per_direction = requested.unwrap_or(per_direction);
    let required = requested.unwrap_or(required);
    let mut run = Run::new("differential");
    for i in 0..per_direction * 2 {
        let hook = if i % 2 == 0 {
            Hook::FromContainer
        } else {
            Hook::ToContainer
        };
        let frame = run.frame();
        if test_run_refuses(&frame) {
            continue;
        }
        let kernel = harness
            .kernel(hook, &frame)
            .unwrap_or_else(|e| panic!("test run failed: {e}\n  frame: {}", hex(&frame)));
        let model = harness.model(hook, &frame);
        // The program's returned action too, not only the counter that
        // moved: a program that counted a drop but let the packet on (or
        // the reverse) disagrees.
        let action = model.map(|d| match d.verdict {
            Verdict::Forwarded | Verdict::Audited => TC_CONTINUE,
            Verdict::Dropped => TC_DROP,
        });
        let agree = kernel.decision() == model && action.is_none_or(|a| a == kernel.action);
        let seen = format!(
            "{hook:?}: kernel {:?} (action {}), model {model:?} (action {action:?})",
            kernel.decision(),
            kernel.action,
        );
        if !run.judged(
            model.map(|d| d.reason.name()).as_slice(),
            agree,
            seen,
            &frame,
        ) {
            break;
        }
        if i % 4096 == 0 {
            // Keep the ring buffer from filling; the records are checked elsewhere.
            harness.datapath.drain_events().unwrap();
        }
    }
    run.finish(required, reasons);
}

/// How many frames `NETWATCH_DIFF_PACKETS` asks for, if it is set.
fn requested_packets() -> Option<usize> {
    std::env::var("NETWATCH_DIFF_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// One differential run: its seeded frames, and what it found.
struct Run {
    seed: u64,
    rng: StdRng,
    pools: (Vec<[u8; 6]>, Vec<Ipv4Addr>, Vec<Ipv6Addr>),
    checked: usize,
    outcomes: std::collections::BTreeMap<String, usize>,
    disagreements: Vec<String>,
}

impl Run {
    /// Seeded from `NETWATCH_DIFF_SEED`, else at random (printed, to
    /// replay).
    fn new(what: &str) -> Run {
        let seed: u64 = std::env::var("NETWATCH_DIFF_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random);
        println!("{what} seed {seed} (replay with NETWATCH_DIFF_SEED={seed})");
        Run {
            seed,
            rng: StdRng::seed_from_u64(seed),
            pools: address_pools(),
            checked: 0,
            outcomes: std::collections::BTreeMap::new(),
            disagreements: Vec::new(),
        }
    }

    /// A random frame, mutated half of the time.
    fn frame(&mut self) -> Vec<u8> {
        let (macs, v4s, v6s) = &self.pools;
        let frame = random_valid_frame(&mut self.rng, macs, v4s, v6s);
        if self.rng.random_bool(0.5) {
            mutate(&frame, &mut self.rng)
        } else {
            frame
        }
    }

    /// A TCP or UDP packet from anyone in the pools to the endpoint under
    /// test ([`EP_MAC`], [`EP_V4`] or [`EP_V6`]) on one of the ports
    /// [`macvlan_published`] publishes, or on 8080 which it does not;
    /// mutated half of the time. Random frames hit a published port too
    /// rarely to show what publishing changes.
    fn frame_to_a_published_port(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let (macs, v4s, v6s) = &self.pools;
        let eth = Frame::eth(*macs.choose(rng).unwrap(), EP_MAC);
        let f = if rng.random_bool(0.5) {
            eth.ipv4(*v4s.choose(rng).unwrap(), EP_V4)
        } else {
            eth.ipv6(*v6s.choose(rng).unwrap(), EP_V6)
        };
        let port = *[80, 53, 22, 443, 123, 8080].choose(rng).unwrap();
        let sport = rng.random_range(1024..65535);
        let f = if rng.random_bool(0.5) {
            f.tcp(sport, port, SYN)
        } else {
            f.udp(sport, port)
        };
        let frame = f.payload_len(rng.random_range(0..32)).build();
        if rng.random_bool(0.5) {
            mutate(&frame, rng)
        } else {
            frame
        }
    }

    /// Counts one checked frame with the outcomes the model gives it (a
    /// reason's name, or what a macvlan run labels it; none: the model has
    /// no say); false once enough disagreements are collected.
    fn judged<S: AsRef<str>>(
        &mut self,
        outcomes: &[S],
        agree: bool,
        seen: String,
        frame: &[u8],
    ) -> bool {
        self.checked += 1;
        for outcome in outcomes {
            *self
                .outcomes
                .entry(outcome.as_ref().to_owned())
                .or_insert(0) += 1;
        }
        if !agree {
            self.disagreements
                .push(format!("{seen}\n  frame: {}", hex(frame)));
        }
        self.disagreements.len() < 20
    }

    /// No disagreement, at least `required` frames checked, and each of
    /// `reasons` (`None`: forwarded or passed) in at least one frame in a
    /// thousand.
    fn finish(&self, required: usize, reasons: &[DropReason]) {
        let names: Vec<&str> = reasons.iter().map(|r| r.name()).collect();
        // Measured: the rarest, extension-header-limit, is about 0.4% of
        // the veth run's frames.
        self.finish_with(required, &names, 1000);
    }

    /// [`Run::finish`] for outcomes by name, each required in at least one
    /// frame in `one_in`.
    fn finish_with(&self, required: usize, outcomes_required: &[&str], one_in: usize) {
        let (seed, checked, outcomes) = (self.seed, self.checked, &self.outcomes);
        println!("checked {checked} frames; model outcomes: {outcomes:?}");
        assert!(
            self.disagreements.is_empty(),
            "seed {seed}: kernel and model disagree:\n{}",
            self.disagreements.join("\n")
        );
        assert!(
            checked >= required,
            "too few frames were checked: {checked} < {required}"
        );
        // A differential test whose frames all land in one class proves
        // little: every outcome the policy can have must be exercised, none
        // as a fluke.
        let least = (checked / one_in).max(1);
        let rare: Vec<_> = outcomes_required
            .iter()
            .map(|r| (r, outcomes.get(*r).copied().unwrap_or(0)))
            .filter(|(_, n)| *n < least)
            .collect();
        assert!(
            rare.is_empty(),
            "seed {seed}: outcomes exercised by fewer than {least} of {checked} frames: {rare:?} \
             (all: {outcomes:?})"
        );
    }
}

/// The MACs and addresses random frames are built from: the endpoint's,
/// its network's, the host's, the allow-listed and the outside ones, and
/// broadcast, multicast and unspecified ones.
fn address_pools() -> (Vec<[u8; 6]>, Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let macs = vec![EP_MAC, GW_MAC, PEER_MAC, [0x02, 0, 0, 0, 0, 0x99]];
    let v4s: Vec<Ipv4Addr> = vec![
        EP_V4,
        GW_V4,
        PEER_V4,
        HOST_V4,
        HOST_IN_NET_V4,
        DOCKER0_V4,
        OTHER_NET_V4,
        OUTSIDE_V4,
        ALLOWED_NET_V4,
        ALLOWED_DNS_V4,
        ALLOWED_ICMP_V4,
        Ipv4Addr::new(172, 30, 255, 255),
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
    ];
    let v6s: Vec<Ipv6Addr> = vec![
        EP_V6,
        EP_LL,
        GW_V6,
        PEER_V6,
        HOST_V6,
        HOST_IN_NET_V6,
        BRIDGE_LL,
        OUTSIDE_V6,
        ALLOWED_ANY_V6,
        Ipv6Addr::UNSPECIFIED,
        "ff02::1".parse().unwrap(),
        "ff02::1:ff00:1".parse().unwrap(),
    ];
    (macs, v4s, v6s)
}

/// The uplink shield (XDP) against its own model
/// (`netwatch::policy::model::uplink_verdict`): it parses headers of its
/// own, so the veth differential does not cover it. The protected prefixes
/// are the fixture network's, which the random frames' addresses hit
/// often from either end.
#[test]
fn uplink_shield_and_its_model_agree_on_random_and_mutated_frames() {
    let per_run = requested_packets().unwrap_or(40_000);
    let mut run = Run::new("uplink differential");
    let mut harness = Harness::standard();
    let protected: Vec<Cidr> = ["172.30.0.0/16", "fd00:30::/64"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    harness.datapath.protect(&protected).unwrap();
    for i in 0..per_run {
        let frame = run.frame();
        let kernel = match harness.kernel(Hook::Uplink, &frame) {
            Ok(kernel) => kernel,
            // Frames the kernel will not test-run (shorter than Ethernet).
            Err(e) if is_einval(&e) && frame.len() < 14 => continue,
            Err(e) => panic!("test run failed: {e}\n  frame: {}", hex(&frame)),
        };
        let model = uplink_verdict(&protected, &frame);
        let action = if model == DropReason::None {
            XDP_PASS
        } else {
            XDP_DROP
        };
        let agree = kernel.reason == Some(model) && kernel.action == action;
        let seen = format!(
            "kernel {:?} (action {}), model {model:?} (action {action})",
            kernel.reason, kernel.action
        );
        if !run.judged(&[model.name()], agree, seen, &frame) {
            break;
        }
        if i % 4096 == 0 {
            harness.datapath.drain_events().unwrap();
        }
    }
    run.finish(
        per_run * 9 / 10,
        &[
            DropReason::None,
            DropReason::ProtectedPrefix,
            DropReason::SpoofedSource,
        ],
    );
}

/// The macvlan programs against their model
/// (`ReferenceModel::macvlan_parent` and `macvlan_child`): they find the
/// judged endpoint by source MAC and the sender's namespace, so each runs
/// through fifteen topologies (`fixture::macvlan_configs`) that between
/// them take every branch of the namespace test, leave the judging device
/// without a policy, and publish ports, with source MACs drawn mostly from
/// the ports' own. Each frame's returned action and every counter it moves
/// (verdict and audit counters) must be what the model says.
#[test]
fn macvlan_programs_and_their_model_agree_on_random_and_mutated_frames() {
    let per_config = requested_packets().unwrap_or(5_000);
    let mut run = Run::new("macvlan differential");
    // The judging ports' MACs three times over: most frames then hit a
    // port, about a quarter each of the enforcing and the audited one.
    run.pools.0.extend(
        [[PEER_MAC, AUDITED_MAC]; 3]
            .concat()
            .into_iter()
            .chain([UNMANAGED_MAC, OBSERVED_MAC]),
    );
    run.pools.1.push(AUDITED_V4);
    run.pools.2.push(AUDITED_V6);
    let own = own_netns_cookie();
    let mut loaded: Option<Harness> = None;
    let mut attempted = 0;
    'configs: for hook in [Hook::MacvlanParent, Hook::MacvlanChild] {
        for (n, config) in macvlan_configs(hook, own).iter().enumerate() {
            let policy_less = macvlan_is_policy_less(config);
            // The same topology without its published ports: a frame it
            // drops and the topology lets on was let on by a published port.
            let unpublished = config
                .endpoints
                .iter()
                .any(|spec| !spec.published.is_empty())
                .then(|| {
                    let endpoints = config.endpoints.iter().cloned().map(|mut spec| {
                        spec.published.clear();
                        spec.policy.flags &= !policy_flags::PUBLISHED;
                        spec
                    });
                    ReferenceModel::new(endpoints, host_addresses())
                        .with_macvlan_ports(config.ports.iter().copied())
                });
            let cookies = Cookies {
                sender: own,
                host: config.host_netns_cookie,
            };
            let harness = match &mut loaded {
                Some(harness) => {
                    harness.reconfigure(config);
                    harness
                }
                None => loaded.insert(Harness::macvlan(config)),
            };
            let host = match config.host_netns_cookie {
                0 => "unknown",
                cookie if cookie == own => "the sender's",
                _ => "another namespace's",
            };
            for i in 0..per_config {
                let frame = if unpublished.is_some() && i % 3 == 0 {
                    run.frame_to_a_published_port()
                } else {
                    run.frame()
                };
                if test_run_refuses(&frame) {
                    continue;
                }
                attempted += 1;
                let kernel = harness
                    .kernel_counted(hook, &frame)
                    .unwrap_or_else(|e| panic!("test run failed: {e}\n  frame: {}", hex(&frame)));
                let model = harness.macvlan_model(hook, &frame);
                let expected = CountedOutcome::expected(&model);
                let seen = format!(
                    "{hook:?}, macvlan_configs #{n} (host cookie {host}): kernel {kernel:?}, \
                     model {expected:?} ({:?})",
                    model.counted
                );
                let mut outcomes = macvlan_outcomes(hook, &model, &frame);
                let which = macvlan_program(hook);
                if policy_less && model.counted.is_empty() {
                    outcomes.push(format!("{which}: policy-less, unjudged"));
                }
                if let Some(unpublished) = &unpublished {
                    let without = match hook {
                        Hook::MacvlanParent => {
                            unpublished.macvlan_parent(TEST_RUN_IFINDEX, &frame, cookies)
                        }
                        _ => unpublished.macvlan_child(TEST_RUN_IFINDEX, &frame, cookies),
                    };
                    if without.dropped() && !model.dropped() {
                        outcomes.push(format!("{which}: let on by a published port"));
                    }
                }
                if !run.judged(&outcomes, kernel == expected, seen, &frame) {
                    break 'configs;
                }
                if i % 1024 == 0 {
                    harness.datapath.drain_events().unwrap();
                }
            }
        }
    }
    let mut required = Vec::new();
    for hook in [Hook::MacvlanParent, Hook::MacvlanChild] {
        let which = macvlan_program(hook);
        let mut what: Vec<&str> = DropReason::ALL
            .into_iter()
            .filter(|r| *r != DropReason::ProtectedPrefix)
            .map(DropReason::name)
            .chain([
                "forwarded",
                "dropped",
                "audited",
                "spoofed-mac, forged port",
            ])
            .collect();
        what.push("policy-less, unjudged");
        what.extend(match hook {
            // A parent never judges twice. A child judges what it receives,
            // by its own policy when it has one (the published ports it
            // admits are its own: the parent sees only what children send).
            Hook::MacvlanParent => &["unjudged", "spoofed-mac, unknown MAC"][..],
            _ => &[
                "sibling, then own",
                "audited sibling, then own",
                "let on by a published port",
            ][..],
        });
        required.extend(what.into_iter().map(|what| format!("{which}: {what}")));
    }
    let required: Vec<&str> = required.iter().map(String::as_str).collect();
    // Measured: the rarest, the parent's extension-header-limit, is about
    // 0.09% of the frames here (it is judged only from a port's MAC).
    run.finish_with(attempted * 9 / 10, &required, 2500);
}

fn macvlan_program(hook: Hook) -> &'static str {
    match hook {
        Hook::MacvlanParent => "parent",
        _ => "child",
    }
}

/// What a macvlan run counts a frame as: the program with the reason and
/// the verdict of the decision its action follows (or "unjudged" when
/// nothing was counted); whether a spoofed-mac came from a port's MAC
/// (forged) or from one no port has; and whether a sibling's egress was
/// judged (and audited) before the child's own ingress.
fn macvlan_outcomes(hook: Hook, model: &HookVerdict, frame: &[u8]) -> Vec<String> {
    let which = macvlan_program(hook);
    let Some(first) = model.counted.first() else {
        return vec![format!("{which}: unjudged")];
    };
    let decision = model.decision;
    let mut outcomes = vec![
        format!("{which}: {}", decision.reason.name()),
        format!("{which}: {}", decision.verdict.name()),
    ];
    if decision.reason == DropReason::SpoofedMac {
        let port_macs = [PEER_MAC, AUDITED_MAC, UNMANAGED_MAC, OBSERVED_MAC];
        let from_port = port_macs.iter().any(|mac| frame.get(6..12) == Some(mac));
        let whose = if from_port {
            "forged port"
        } else {
            "unknown MAC"
        };
        outcomes.push(format!("{which}: spoofed-mac, {whose}"));
    }
    if model.counted.len() == 2 {
        outcomes.push(format!("{which}: sibling, then own"));
        if first.verdict == Verdict::Audited {
            outcomes.push(format!("{which}: audited sibling, then own"));
        }
    }
    outcomes
}
