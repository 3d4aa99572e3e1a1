//! Policy from Docker labels, so a compose file can ask for it.
//!
//! | label | on | values | meaning |
//! |---|---|---|---|
//! | `netwatch.egress` | network | `deny`, `audit` | enforce like `internal: true` on a normal network; `audit`: judge the same, drop nothing, record what would be dropped |
//! | `netwatch.egress` | container | `audit` | on the container's networks that a label denies (not internal ones): judge its traffic, drop none of it, record what would be dropped |
//! | `netwatch.gateway` | network | `allow`, `deny` | let the network reach (and be reached from) its gateway |
//! | `netwatch.allow` | network, container | `CIDR[:port[/proto]]`, comma-separated | allow these destinations |
//! | `netwatch.ingress` | network | `published`, `deny` | on an enforced network, accept inbound connections to the containers' published ports (and their answers) |
//!
//! A value netwatch cannot read never widens access: a bad `netwatch.egress`
//! means deny, a bad `netwatch.gateway` means deny, a bad allow entry is left
//! out (the others stay). `netwatch.egress=allow` on an internal network is
//! refused: a label cannot undo what Docker was asked for. Every such case
//! is reported with the object's name.

use std::{collections::BTreeMap, fmt};

use super::AllowRule;

pub const EGRESS: &str = "netwatch.egress";
pub const GATEWAY: &str = "netwatch.gateway";
pub const ALLOW: &str = "netwatch.allow";
pub const INGRESS: &str = "netwatch.ingress";
/// Labels starting with this are netwatch's; unknown ones are reported.
pub const PREFIX: &str = "netwatch.";

/// A label value netwatch refused, and what it did instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelProblem {
    /// e.g. `network backend` or `container web`.
    pub object: String,
    pub label: String,
    pub value: String,
    pub problem: String,
}

impl fmt::Display for LabelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: label {}={:?}: {}",
            self.object, self.label, self.value, self.problem
        )
    }
}

/// What a network's labels ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkLabels {
    /// Enforce egress denial (internal networks always do).
    pub deny_egress: bool,
    /// With `deny_egress`: judge as enforcement would, drop nothing, record
    /// would-be drops as audited (`netwatch.egress=audit`).
    pub audit: bool,
    pub gateway_access: bool,
    pub allow: Vec<AllowRule>,
    /// Accept inbound connections to the published ports of the network's
    /// containers: "internal, except my published ports" (moby#36174).
    pub published_ingress: bool,
}

impl NetworkLabels {
    /// What the network asks for under `agent --audit` (`audit_all`):
    /// audited wherever its policy denies something, internal or not.
    pub fn with_agent_audit(mut self, audit_all: bool) -> NetworkLabels {
        self.audit |= audit_all && self.deny_egress;
        self
    }
}

/// Reads a network's labels. `internal` is Docker's flag.
pub fn network_labels(
    name: &str,
    internal: bool,
    labels: &BTreeMap<String, String>,
    problems: &mut Vec<LabelProblem>,
) -> NetworkLabels {
    let object = format!("network {name}");
    let mut out = NetworkLabels {
        deny_egress: internal,
        ..NetworkLabels::default()
    };
    for (label, value) in labels.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        let mut problem = |text: &str| {
            problems.push(LabelProblem {
                object: object.clone(),
                label: label.clone(),
                value: value.clone(),
                problem: text.to_string(),
            });
        };
        match label.as_str() {
            EGRESS => match value.trim() {
                "deny" => out.deny_egress = true,
                "allow" if internal => {
                    problem("the network is internal; a label cannot allow egress")
                }
                "allow" => {}
                "audit" if internal => problem(
                    "the network is internal; a label cannot turn its enforcement into an \
                     audit (agent --audit can, for the whole host); enforcing",
                ),
                "audit" => {
                    out.deny_egress = true;
                    out.audit = true;
                }
                _ => {
                    out.deny_egress = true;
                    problem("expected deny, audit or allow; denying egress");
                }
            },
            GATEWAY => match value.trim() {
                "allow" => out.gateway_access = true,
                "deny" => {}
                _ => problem("expected allow or deny; the gateway stays unreachable"),
            },
            ALLOW => out.allow = allow_rules(value, &mut problem),
            INGRESS => match value.trim() {
                "published" if internal => problem(
                    "Docker publishes no ports on an internal network; use a normal network \
                     with netwatch.egress=deny instead; nothing is accepted",
                ),
                "published" => out.published_ingress = true,
                "deny" => {}
                _ => problem("expected published or deny; published ports stay closed"),
            },
            _ => problem(
                "not a netwatch label (known: netwatch.egress, netwatch.gateway, netwatch.allow, \
                 netwatch.ingress); ignored",
            ),
        }
    }
    out
}

/// What a container's labels ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    pub allow: Vec<AllowRule>,
    /// `netwatch.egress=audit`: on the networks that a label denies, the
    /// container's traffic is judged and recorded, never dropped. Whether
    /// it applies on a given network is [`ContainerLabels::audits_on`]'s
    /// call.
    pub audit: bool,
}

impl ContainerLabels {
    /// Whether the container's own audit label turns enforcement into an
    /// audit on a network that asked for `network`: only where a label
    /// denies (an internal network stays enforced, as with the network's
    /// own label) and the network is not audited already.
    pub fn audits_on(&self, network: &NetworkLabels, internal: bool) -> bool {
        self.audit && network.deny_egress && !network.audit && !internal
    }
}

/// The problem reported when a container's audit label meets an internal
/// network, which stays enforced.
pub fn container_audit_refused(container: &str, network: &str) -> LabelProblem {
    LabelProblem {
        object: format!("container {container}"),
        label: EGRESS.to_owned(),
        value: "audit".to_owned(),
        problem: format!(
            "network {network} is internal; a label cannot turn its enforcement into an audit \
             (agent --audit can, for the whole host); enforcing there"
        ),
    }
}

/// Reads a container's `netwatch.allow` and `netwatch.egress=audit` labels
/// (other netwatch labels on a container are reported and ignored).
pub fn container_labels(
    name: &str,
    labels: &BTreeMap<String, String>,
    problems: &mut Vec<LabelProblem>,
) -> ContainerLabels {
    let mut out = ContainerLabels::default();
    for (label, value) in labels.iter().filter(|(k, _)| k.starts_with(PREFIX)) {
        let mut problem = |text: &str| {
            problems.push(LabelProblem {
                object: format!("container {name}"),
                label: label.clone(),
                value: value.clone(),
                problem: text.to_string(),
            });
        };
        match (label.as_str(), value.trim()) {
            (ALLOW, _) => out.allow = allow_rules(value, &mut problem),
            (EGRESS, "audit") => out.audit = true,
            (EGRESS, _) => problem(
                "on a container only audit is understood (deny and allow belong on its \
                 networks); ignored",
            ),
            _ => problem(
                "only netwatch.allow and netwatch.egress=audit apply to containers; ignored",
            ),
        }
    }
    out
}

/// Comma- or whitespace-separated allow rules; bad entries are reported and
/// left out.
fn allow_rules(value: &str, problem: &mut impl FnMut(&str)) -> Vec<AllowRule> {
    value
        .split([',', ' ', '\n', '\t'])
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| match entry.parse::<AllowRule>() {
            Ok(rule) => Some(rule),
            Err(e) => {
                problem(&format!("{e}; that entry is left out"));
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn egress_deny_turns_a_normal_network_into_an_enforced_one() {
        let mut problems = Vec::new();
        let got = network_labels("front", false, &labels(&[(EGRESS, "deny")]), &mut problems);
        assert!(got.deny_egress);
        assert!(problems.is_empty());
        let got = network_labels("front", false, &labels(&[]), &mut problems);
        assert!(!got.deny_egress);
    }

    #[test]
    fn bad_values_fall_back_to_the_stricter_choice_and_are_reported() {
        let mut problems = Vec::new();
        let got = network_labels(
            "front",
            false,
            &labels(&[
                (EGRESS, "maybe"),
                (GATEWAY, "yes please"),
                ("netwatch.egres", "deny"),
            ]),
            &mut problems,
        );
        assert!(got.deny_egress, "an unreadable egress value denies");
        assert!(!got.gateway_access, "an unreadable gateway value denies");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .starts_with("network front: label netwatch.egres")
        );
    }

    #[test]
    fn a_label_cannot_open_an_internal_network() {
        let mut problems = Vec::new();
        let got = network_labels("back", true, &labels(&[(EGRESS, "allow")]), &mut problems);
        assert!(got.deny_egress);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn allow_lists_keep_good_entries_and_report_bad_ones() {
        let mut problems = Vec::new();
        let got = network_labels(
            "back",
            true,
            &labels(&[
                (GATEWAY, "allow"),
                (
                    ALLOW,
                    "10.1.0.0/16:5432/tcp, 10.2.0.0/33 ,203.0.113.9:53/udp",
                ),
            ]),
            &mut problems,
        );
        assert!(got.gateway_access);
        assert_eq!(got.allow.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].problem.contains("left out"));
        let rules = container_labels(
            "web",
            &labels(&[(ALLOW, "198.51.100.0/24:443/tcp"), (EGRESS, "deny")]),
            &mut problems,
        );
        assert_eq!(rules.allow.len(), 1);
        assert!(!rules.audit, "deny is no container value");
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[1].object, "container web");
    }

    #[test]
    fn ingress_published_opens_published_ports_only_where_docker_publishes() {
        let mut problems = Vec::new();
        let got = network_labels(
            "front",
            false,
            &labels(&[(EGRESS, "deny"), (INGRESS, "published")]),
            &mut problems,
        );
        assert!(got.published_ingress && got.deny_egress);
        assert!(problems.is_empty(), "{problems:?}");

        let got = network_labels(
            "locked",
            true,
            &labels(&[(INGRESS, "published")]),
            &mut problems,
        );
        assert!(!got.published_ingress, "internal networks publish nothing");
        let got = network_labels("front", false, &labels(&[(INGRESS, "yes")]), &mut problems);
        assert!(!got.published_ingress, "a bad value keeps them closed");
        let said: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("network locked: label netwatch.ingress=\"published\""));
        assert!(said[1].contains("expected published or deny"), "{said:?}");
    }

    #[test]
    fn egress_audit_judges_like_deny_and_cannot_weaken_an_internal_network() {
        let mut problems = Vec::new();
        let got = network_labels("front", false, &labels(&[(EGRESS, "audit")]), &mut problems);
        assert!(got.deny_egress && got.audit);
        assert!(problems.is_empty(), "{problems:?}");
        let got = network_labels("locked", true, &labels(&[(EGRESS, "audit")]), &mut problems);
        assert!(
            got.deny_egress && !got.audit,
            "an internal network stays enforced"
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].problem.contains("agent --audit can"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_containers_audit_label_audits_it_only_where_a_label_denies() {
        let mut problems = Vec::new();
        let web = container_labels("web", &labels(&[(EGRESS, "audit")]), &mut problems);
        assert!(web.audit && problems.is_empty(), "{problems:?}");
        let denied = network_labels("front", false, &labels(&[(EGRESS, "deny")]), &mut problems);
        assert!(web.audits_on(&denied, false));
        assert!(
            !web.audits_on(&denied, true),
            "an internal network stays enforced"
        );
        let open = network_labels("open", false, &labels(&[]), &mut problems);
        assert!(
            !web.audits_on(&open, false),
            "nothing to audit where nothing is denied"
        );
        let audited = network_labels("aud", false, &labels(&[(EGRESS, "audit")]), &mut problems);
        assert!(
            !web.audits_on(&audited, false),
            "audited by the network already"
        );
        let refused = container_audit_refused("web", "back").to_string();
        assert!(
            refused.starts_with(
                "container web: label netwatch.egress=\"audit\": network back is internal"
            ),
            "{refused}"
        );
    }
}
