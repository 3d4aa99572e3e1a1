//! `--from-kernel`: the same frames through the loaded programs with
//! `BPF_PROG_TEST_RUN`. Nothing is sent and nothing is attached: the
//! programs are loaded privately (no pin root), so the agent's maps are
//! never touched.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use netwatch_common::{
    endpoint::{MacvlanPort, MacvlanPortKey, policy_flags},
    reason::{DropReason, Verdict},
    verdict::Decision,
};

use super::path::{MacvlanProbe, Probe};
use crate::{
    datapath::{Datapath, Hook, LoadOptions, ReasonCounts, TEST_RUN_IFINDEX},
    policy::{CompiledTables, compile},
};

/// `TC_ACT_SHOT` and `XDP_DROP` (linux/pkt_cls.h, linux/bpf.h): the return
/// values by which a program drops.
const TC_ACT_SHOT: i32 = 2;
const XDP_DROP: i32 = 1;

/// The programs, loaded once per `explain`, and what is in their maps.
pub struct Kernel {
    datapath: Datapath,
    host_addrs: Vec<IpAddr>,
    protected_written: bool,
}

impl Kernel {
    /// # Errors
    /// Not root, or the kernel refuses the programs.
    pub fn load(host_addrs: &[IpAddr]) -> Result<Kernel> {
        Ok(Kernel {
            datapath: Datapath::load(&LoadOptions::default())?,
            host_addrs: host_addrs.to_vec(),
            protected_written: false,
        })
    }

    /// What the program decides for the probe: the reason whose counter
    /// moved, checked against the action the program returned.
    ///
    /// # Errors
    /// The kernel refuses a map update or the test run, the program counted
    /// nothing, or its action contradicts its counter.
    pub fn decide(&mut self, probe: &Probe) -> Result<Decision> {
        let (hook, frame) = match probe {
            Probe::Veth { hook, spec, frame } => {
                // Each veth hop has its own endpoint on the one test-run
                // ifindex: the maps hold exactly that endpoint's policy.
                self.datapath
                    .replace(&compile(std::slice::from_ref(spec), &self.host_addrs)?)?;
                (*hook, frame)
            }
            Probe::Macvlan(probe) => {
                self.datapath
                    .macvlan_support()
                    .map_err(|why| anyhow!("{why}"))?;
                let tables = macvlan_tables(probe, &self.host_addrs)?;
                self.datapath.replace(&tables)?;
                (probe.hook, &probe.frame)
            }
            Probe::Uplink { protected, frame } => {
                if !self.protected_written {
                    self.datapath.protect(protected)?;
                    self.protected_written = true;
                }
                (Hook::Uplink, frame)
            }
        };
        let counts = |datapath: &Datapath| -> Result<ReasonCounts> {
            Ok(match hook {
                Hook::Uplink => datapath.uplink_counts()?,
                _ => datapath.verdict_counts()?,
            })
        };
        let before = counts(&self.datapath)?;
        let outcome = self.datapath.test_run(hook, frame, 1)?;
        let after = counts(&self.datapath)?;
        let reason = DropReason::ALL
            .into_iter()
            .find(|r| after[*r as usize] != before[*r as usize])
            .ok_or_else(|| {
                anyhow!(
                    "the kernel's {} program counted nothing",
                    hook.program_name()
                )
            })?;
        let decision = Decision::from_reason(reason);
        let drop_action = if hook == Hook::Uplink {
            XDP_DROP
        } else {
            TC_ACT_SHOT
        };
        if (outcome.action == drop_action) != (decision.verdict == Verdict::Dropped) {
            bail!(
                "the kernel's {} program returned action {} but counted {}",
                hook.program_name(),
                outcome.action,
                reason.name()
            );
        }
        Ok(decision)
    }
}

/// The maps a macvlan probe runs against: the program's own interface is
/// the test-run ifindex. `macvlan_parent` finds the judged endpoint by the
/// frame's source MAC under [`PROBE_JUDGED_KEY`]; `macvlan_child` on the
/// judged endpoint's own interface finds its policy there; on a sibling's
/// (`receiver`), the sibling's policy, observed only so that its own
/// ingress decision counts as forwarded, and the judged endpoint by MAC. A
/// test run's socket is in netwatch's own namespace, so the namespace check
/// passes, as it does for a child's real frames.
fn macvlan_tables(probe: &MacvlanProbe, host_addrs: &[IpAddr]) -> Result<CompiledTables> {
    let MacvlanProbe {
        hook,
        judged,
        parent,
        receiver,
        mac,
        ..
    } = probe;
    let (hook, mac) = (*hook, *mac);
    let mut judged = judged.clone();
    let port = |parent: u32| {
        (
            MacvlanPortKey {
                parent,
                mac,
                _pad: [0; 2],
            },
            MacvlanPort {
                endpoint: PROBE_JUDGED_KEY,
                _pad: 0,
                netns_cookie: 0,
            },
        )
    };
    Ok(match (hook, receiver) {
        (Hook::MacvlanParent, _) => {
            judged.ifindex = PROBE_JUDGED_KEY;
            let mut parent = parent.clone();
            parent.ifindex = TEST_RUN_IFINDEX;
            compile(&[parent, judged], host_addrs)?.with_macvlan_ports(&[port(TEST_RUN_IFINDEX)])?
        }
        (_, Some(receiver)) => {
            judged.ifindex = PROBE_JUDGED_KEY;
            let mut receiver = receiver.clone();
            receiver.ifindex = TEST_RUN_IFINDEX;
            receiver.policy.flags &= !policy_flags::ENFORCE;
            let parent = receiver.policy.parent;
            compile(&[receiver, judged], host_addrs)?.with_macvlan_ports(&[port(parent)])?
        }
        (_, None) => {
            judged.ifindex = TEST_RUN_IFINDEX;
            compile(&[judged], host_addrs)?
        }
    })
}

/// The key a probed macvlan endpoint's policy goes under when the program
/// finds it by MAC: any ifindex but the test run's.
const PROBE_JUDGED_KEY: u32 = 0x7fff_0001;
