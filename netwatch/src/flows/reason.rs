//! Why a flow was dropped (or would have been, audited), as flows, drop
//! groups, filters and exports carry it: one of netwatch's own reasons, or
//! a reason of the kernel's stack after netwatch.

use std::{fmt, str::FromStr, sync::LazyLock};

use netwatch_common::reason::DropReason;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// As text: netwatch's reasons by name (`host-access`), the kernel's as
/// `kernel:` and the kernel's name in lower case (`kernel:netfilter_drop`),
/// and `unknown` for a drop whose reason is not known. Ordered by that
/// text, as drop groups and graph edges have always been listed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlowReason {
    /// One of netwatch's reasons (never [`DropReason::None`]).
    Netwatch(DropReason),
    /// A reason of the kernel's: its name without `kernel:`, as
    /// [`is_kernel_reason_name`] accepts it. The kernel's enum is read
    /// from its BTF at run time, so the set of names is open.
    Kernel(String),
    /// A drop without a known reason.
    Unknown,
}

/// The prefix of the kernel's reasons.
const KERNEL_PREFIX: &str = "kernel:";

/// A kernel reason name as the kernel drop program reports it: lower case
/// letters, digits and `_` (which names exist depends on the running
/// kernel, so any such name is accepted).
pub fn is_kernel_reason_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl FlowReason {
    /// A kernel reason by its name without `kernel:`.
    pub fn kernel(name: &str) -> FlowReason {
        FlowReason::Kernel(name.to_owned())
    }

    /// A kernel value as the aggregate keeps it: `None` when forwarded.
    pub fn of(reason: DropReason) -> Option<FlowReason> {
        (reason != DropReason::None).then_some(FlowReason::Netwatch(reason))
    }

    /// [`FlowReason::of`], borrowed from a table of netwatch's reasons,
    /// so that a flow's [`super::aggregate::FlowView`] allocates nothing.
    pub fn of_static(reason: DropReason) -> Option<&'static FlowReason> {
        static ALL: LazyLock<Vec<FlowReason>> = LazyLock::new(|| {
            DropReason::ALL
                .iter()
                .map(|r| FlowReason::Netwatch(*r))
                .collect()
        });
        if reason == DropReason::None {
            return None;
        }
        ALL.iter().find(|r| r.netwatch() == Some(reason))
    }

    /// Netwatch's own reason, if it is one.
    pub fn netwatch(&self) -> Option<DropReason> {
        match self {
            FlowReason::Netwatch(reason) => Some(*reason),
            _ => None,
        }
    }
}

impl FlowReason {
    /// The text in two pieces, without allocating.
    fn text(&self) -> (&str, &str) {
        match self {
            FlowReason::Netwatch(reason) => (reason.name(), ""),
            FlowReason::Kernel(name) => (KERNEL_PREFIX, name),
            FlowReason::Unknown => ("unknown", ""),
        }
    }
}

impl Ord for FlowReason {
    fn cmp(&self, other: &FlowReason) -> std::cmp::Ordering {
        let (a, b) = (self.text(), other.text());
        a.0.bytes()
            .chain(a.1.bytes())
            .cmp(b.0.bytes().chain(b.1.bytes()))
    }
}

impl PartialOrd for FlowReason {
    fn partial_cmp(&self, other: &FlowReason) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<DropReason> for FlowReason {
    fn from(reason: DropReason) -> FlowReason {
        FlowReason::Netwatch(reason)
    }
}

impl fmt::Display for FlowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: widths and alignment (`{:<20}`) apply.
        match self {
            FlowReason::Netwatch(reason) => f.pad(reason.name()),
            FlowReason::Kernel(name) => f.pad(&format!("{KERNEL_PREFIX}{name}")),
            FlowReason::Unknown => f.pad("unknown"),
        }
    }
}

/// Not a reason: neither one of netwatch's (but `none`), nor `kernel:` and
/// a kernel name, nor `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a drop reason")]
pub struct NotAReason;

impl FromStr for FlowReason {
    type Err = NotAReason;

    fn from_str(text: &str) -> Result<FlowReason, NotAReason> {
        if let Some(name) = text.strip_prefix(KERNEL_PREFIX) {
            return if is_kernel_reason_name(name) {
                Ok(FlowReason::kernel(name))
            } else {
                Err(NotAReason)
            };
        }
        if text == "unknown" {
            return Ok(FlowReason::Unknown);
        }
        match text.parse::<DropReason>() {
            Ok(DropReason::None) | Err(_) => Err(NotAReason),
            Ok(reason) => Ok(FlowReason::Netwatch(reason)),
        }
    }
}

impl Serialize for FlowReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FlowReason::Netwatch(reason) => reason.serialize(serializer),
            _ => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for FlowReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("not a drop reason: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_are_the_reason_names_and_read_back() {
        let mut cases: Vec<(FlowReason, String)> = DropReason::ALL
            .into_iter()
            .filter(|r| *r != DropReason::None)
            .map(|r| (FlowReason::Netwatch(r), r.name().to_owned()))
            .collect();
        cases.extend([
            (
                FlowReason::kernel("netfilter_drop"),
                "kernel:netfilter_drop".to_owned(),
            ),
            (
                FlowReason::kernel("reason_12"),
                "kernel:reason_12".to_owned(),
            ),
            (FlowReason::Unknown, "unknown".to_owned()),
            (
                FlowReason::Netwatch(DropReason::HostAccess),
                "host-access".to_owned(),
            ),
        ]);
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(format!("{reason:<24}|"), format!("{text:<24}|"));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<FlowReason>(&json).unwrap(), reason);
            assert_eq!(text.parse::<FlowReason>(), Ok(reason));
        }
        let mut sorted = [
            FlowReason::Unknown,
            FlowReason::kernel("no_socket"),
            FlowReason::Netwatch(DropReason::NotInNetwork),
            FlowReason::Netwatch(DropReason::HostAccess),
            FlowReason::kernel("netfilter_drop"),
        ];
        sorted.sort();
        let texts: Vec<String> = sorted.iter().map(ToString::to_string).collect();
        let mut by_text = texts.clone();
        by_text.sort();
        assert_eq!(texts, by_text);
        for bad in ["none", "kernel:", "kernel:Bad", "host_access", ""] {
            assert!(bad.parse::<FlowReason>().is_err(), "{bad}");
        }
    }
}
