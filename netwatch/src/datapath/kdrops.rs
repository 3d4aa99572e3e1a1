//! Loading and attaching the kernel drop program (`kernel_drops` on the
//! `kfree_skb` BTF tracepoint) and reading its records.
//!
//! At attach, the offsets of `sk_buff.{head, network_header, protocol,
//! dev}` and `net_device.ifindex` are read from the running kernel's
//! BTF ([`super::kernel_btf`]) and written to `KDROP_CONFIG`, together with
//! the reasons not worth a record (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`,
//! `SKB_DROP_REASON_NOT_SPECIFIED`, whichever the kernel has); the names
//! of `enum skb_drop_reason` come from the same BTF, so a reason is named
//! as the running kernel names it. Not pinned: the program observes only,
//! and goes with the process that attached it.
//!
//! Minimum kernel: 5.17 (`kfree_skb` carries a reason), with BTF
//! (`CONFIG_DEBUG_INFO_BTF`) for `tp_btf` and for the offsets.

use std::collections::BTreeMap;

use aya::{
    Btf as AyaBtf,
    maps::{Array, HashMap, MapData},
    programs::BtfTracePoint,
};
use netwatch_common::{
    kdrop::{
        KernelDropConfig, KernelDropEvent, KernelDropKey, KernelDropStats, NO_REASON, SKIP_REASONS,
    },
    names,
};

use super::{
    Datapath, DatapathError,
    kernel_btf::{Btf, BtfError},
};
use crate::flows::FlowReason;

/// The kernel's drop reasons by value, as `enum skb_drop_reason` names
/// them in the running kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropReasonNames(BTreeMap<u32, String>);

/// Prefixes the kernel puts before reason names; the rest, in lower
/// case, is the name netwatch shows after `kernel:`.
const REASON_PREFIXES: [&str; 2] = ["SKB_DROP_REASON_", "SKB_"];

/// Never recorded: reasons that are not drops or say nothing, and the
/// verdicts of BPF programs (`TC_INGRESS`, `TC_EGRESS`, `XDP`): a packet
/// netwatch's own TC program drops reaches `kfree_skb` with `TC_INGRESS`
/// (from the container) or `TC_EGRESS` (to it), and netwatch records
/// those itself, with its reason. Another TC or XDP program's drops are
/// left out with them.
const SKIPPED: [&str; 6] = [
    "SKB_NOT_DROPPED_YET",
    "SKB_CONSUMED",
    "SKB_DROP_REASON_NOT_SPECIFIED",
    "SKB_DROP_REASON_TC_INGRESS",
    "SKB_DROP_REASON_TC_EGRESS",
    "SKB_DROP_REASON_XDP",
];

impl DropReasonNames {
    /// From `(value, NAME)` pairs as the kernel's enum has them.
    pub fn new(values: impl IntoIterator<Item = (u64, String)>) -> DropReasonNames {
        DropReasonNames(
            values
                .into_iter()
                .filter_map(|(value, name)| Some((u32::try_from(value).ok()?, name)))
                .collect(),
        )
    }

    /// `kernel:netfilter_drop` for `SKB_DROP_REASON_NETFILTER_DROP`;
    /// `kernel:reason_<n>` for a value the kernel's enum does not name
    /// (subsystem reasons, such as mac80211's, live in other enums).
    pub fn name(&self, value: u32) -> FlowReason {
        match self.0.get(&value) {
            Some(name) => {
                let short = REASON_PREFIXES
                    .iter()
                    .find_map(|p| name.strip_prefix(p))
                    .unwrap_or(name);
                FlowReason::Kernel(short.to_ascii_lowercase())
            }
            None => FlowReason::Kernel(format!("reason_{value}")),
        }
    }

    /// Every name, as [`DropReasonNames::name`] gives them.
    pub fn all(&self) -> Vec<FlowReason> {
        self.0.keys().map(|v| self.name(*v)).collect()
    }

    /// The values of the reasons the program skips.
    fn skipped(&self) -> [u32; SKIP_REASONS] {
        let mut skip = [NO_REASON; SKIP_REASONS];
        let values = self
            .0
            .iter()
            .filter(|(_, name)| SKIPPED.contains(&name.as_str()))
            .map(|(value, _)| *value);
        for (slot, value) in skip.iter_mut().zip(values) {
            *slot = value;
        }
        skip
    }
}

/// What the kernel's BTF says the program needs: offsets, reasons.
///
/// # Errors
/// The BTF is missing or lacks a field or the enum (a kernel older than
/// 5.17 has no `enum skb_drop_reason`).
pub fn read_kernel_layout() -> Result<(KernelDropConfig, DropReasonNames), BtfError> {
    let btf = Btf::vmlinux()?;
    let reasons = DropReasonNames::new(btf.enum_values("skb_drop_reason")?);
    let skb = |member| btf.member_offset("sk_buff", member);
    let mut config = KernelDropConfig {
        skb_head: skb("head")?,
        skb_network_header: skb("network_header")?,
        skb_protocol: skb("protocol")?,
        skb_tail: skb("tail")?,
        skb_dev: skb("dev")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        skip: reasons.skipped(),
        enabled: KernelDropConfig::ENABLED,
    };
    if config.fits_span() {
        config.enabled = KernelDropConfig::ENABLED_SPAN;
    }
    Ok((config, reasons))
}

impl Datapath {
    /// Loads and attaches the kernel drop program; returns the kernel's
    /// reason names. Calling it again while attached does nothing more.
    ///
    /// # Errors
    /// [`DatapathError::KernelDrops`] when the kernel's BTF lacks what the
    /// program needs (Linux < 5.17, no BTF); or the kernel refuses the
    /// program or the attachment.
    pub fn attach_kernel_drops(&mut self) -> Result<DropReasonNames, DatapathError> {
        let (config, reasons) =
            read_kernel_layout().map_err(|e| DatapathError::KernelDrops(e.to_string()))?;
        let name = names::MAP_KDROP_CONFIG;
        let mut map: Array<&mut MapData, KernelDropConfig> = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()
            .map_err(DatapathError::map(name))?;
        map.set(0, config, 0).map_err(DatapathError::map(name))?;
        if self.kernel_drops.is_some() {
            return Ok(reasons);
        }
        let prog = names::PROG_KERNEL_DROPS;
        let program = self.kernel_drops_program()?;
        if program.fd().is_err() {
            let btf =
                AyaBtf::from_sys_fs().map_err(|e| DatapathError::KernelDrops(e.to_string()))?;
            program
                .load(names::TRACEPOINT_KFREE_SKB, &btf)
                .map_err(DatapathError::program(prog))?;
        }
        let link = program.attach().map_err(DatapathError::program(prog))?;
        self.kernel_drops = Some(link);
        Ok(reasons)
    }

    /// Detaches the kernel drop program (the benchmark compares with and
    /// without it). Nothing happens when it is not attached.
    ///
    /// # Errors
    /// The kernel refuses the detachment.
    pub fn detach_kernel_drops(&mut self) -> Result<(), DatapathError> {
        let Some(link) = self.kernel_drops.take() else {
            return Ok(());
        };
        let prog = names::PROG_KERNEL_DROPS;
        let program = self.kernel_drops_program()?;
        program.detach(link).map_err(DatapathError::program(prog))
    }

    fn kernel_drops_program(&mut self) -> Result<&mut BtfTracePoint, DatapathError> {
        let prog = names::PROG_KERNEL_DROPS;
        self.ebpf
            .program_mut(prog)
            .ok_or(DatapathError::MissingProgram(prog))?
            .try_into()
            .map_err(DatapathError::program(prog))
    }

    /// Whether the kernel drop program is attached.
    pub fn kernel_drops_attached(&self) -> bool {
        self.kernel_drops.is_some()
    }

    /// Takes every record waiting in the kernel drop ring buffer. Records
    /// of the wrong size or kind are skipped and counted in the second
    /// value.
    ///
    /// # Errors
    /// The ring buffer map cannot be opened.
    pub fn drain_kernel_drops(&mut self) -> Result<(Vec<KernelDropEvent>, u64), DatapathError> {
        self.drain_ring(names::MAP_KDROP_EVENTS, KernelDropEvent::from_bytes)
    }

    /// Every entry of `KDROPS` now: the kernel drop program's counts per
    /// key, rate-limited records aside (its oracle test compares them with
    /// the reference model's).
    ///
    /// # Errors
    /// The kernel refuses the iteration.
    pub fn kernel_drop_counts(
        &self,
    ) -> Result<Vec<(KernelDropKey, KernelDropStats)>, DatapathError> {
        let name = names::MAP_KDROPS;
        let map: HashMap<&MapData, KernelDropKey, KernelDropStats> = self
            .map(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(DatapathError::map(name))
    }

    /// Empties `KDROPS`, so that counts start from zero (as
    /// [`Datapath::clear_flows`] does for the flow table).
    ///
    /// # Errors
    /// The kernel refuses the iteration or a delete.
    pub fn clear_kernel_drop_counts(&mut self) -> Result<(), DatapathError> {
        self.clear_hash_map::<KernelDropKey, KernelDropStats>(names::MAP_KDROPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> DropReasonNames {
        DropReasonNames::new([
            (0, "SKB_NOT_DROPPED_YET".to_string()),
            (1, "SKB_CONSUMED".to_string()),
            (2, "SKB_DROP_REASON_NOT_SPECIFIED".to_string()),
            (12, "SKB_DROP_REASON_NETFILTER_DROP".to_string()),
            (62, "SKB_DROP_REASON_TC_EGRESS".to_string()),
            (73, "SKB_DROP_REASON_TC_INGRESS".to_string()),
            (0x1_0000_0000, "TOO_BIG".to_string()),
        ])
    }

    #[test]
    fn reasons_read_as_kernel_and_the_kernels_name_in_lower_case() {
        let names = names();
        assert_eq!(names.name(12).to_string(), "kernel:netfilter_drop");
        assert_eq!(names.name(1).to_string(), "kernel:consumed");
        assert_eq!(names.name(99).to_string(), "kernel:reason_99");
        assert_eq!(names.all().len(), 6, "a value beyond u32 is left out");
    }

    #[test]
    fn not_drops_unspecified_drops_and_tc_verdicts_are_skipped() {
        let skip = names().skipped();
        assert_eq!(skip, [0, 1, 2, 62, 73, NO_REASON, NO_REASON, NO_REASON]);
    }
}
