//! Which interfaces get the uplink shield: the ones named on the command
//! line, or by default every interface that holds a default route (where
//! the outside world comes in).

use std::fmt;

use super::Target;
use crate::host::routes;

/// The `--uplink` choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UplinkChoice {
    /// Every interface holding an IPv4 or IPv6 default route, re-read at
    /// every sync (routes move).
    #[default]
    DefaultRoutes,
    /// These interfaces, by name.
    Named(Vec<String>),
    /// No uplink shield (`--uplink none`).
    Off,
}

/// `--uplink` values that cannot be combined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--uplink none turns the shield off and cannot be combined with interface names")]
pub struct UplinkChoiceError;

impl UplinkChoice {
    /// From the repeated `--uplink` flag: nothing → default routes; `none`
    /// alone → off; names → those interfaces.
    ///
    /// # Errors
    /// `none` mixed with names.
    pub fn from_flags(values: &[String]) -> Result<UplinkChoice, UplinkChoiceError> {
        match values {
            [] => Ok(UplinkChoice::DefaultRoutes),
            [only] if only == "none" => Ok(UplinkChoice::Off),
            names if names.iter().any(|n| n == "none") => Err(UplinkChoiceError),
            names => Ok(UplinkChoice::Named(names.to_vec())),
        }
    }
}

impl fmt::Display for UplinkChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UplinkChoice::DefaultRoutes => f.write_str("interfaces holding a default route"),
            UplinkChoice::Named(names) => f.write_str(&names.join(", ")),
            UplinkChoice::Off => f.write_str("none"),
        }
    }
}

/// The interfaces the shield should be on now, and the ones asked for that
/// cannot be (with why). Interfaces in `exclude` (the bridges and veths the
/// TC programs go on) never get the shield, even if a default route points
/// at one.
pub fn resolve(choice: &UplinkChoice, exclude: &[u32]) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    match choice {
        UplinkChoice::Off => {}
        UplinkChoice::DefaultRoutes => match routes::default_route_interfaces() {
            Ok(ifindexes) => {
                for ifindex in ifindexes.into_iter().filter(|i| !exclude.contains(i)) {
                    match nix::net::if_::if_indextoname(ifindex) {
                        Ok(name) => {
                            targets.push(uplink_target(name.to_string_lossy().into(), ifindex))
                        }
                        Err(e) => problems.push(format!(
                            "uplink ifindex {ifindex} (holds a default route): {e}"
                        )),
                    }
                }
            }
            Err(e) => problems.push(format!("cannot read the default routes: {e}")),
        },
        UplinkChoice::Named(names) => {
            for name in names {
                match nix::net::if_::if_nametoindex(name.as_str()) {
                    Ok(ifindex) if exclude.contains(&ifindex) => problems.push(format!(
                        "uplink {name}: it is a Docker bridge or veth, which the TC programs hold"
                    )),
                    Ok(ifindex) => targets.push(uplink_target(name.clone(), ifindex)),
                    Err(_) => problems.push(format!("uplink {name}: no such interface")),
                }
            }
        }
    }
    (targets, problems)
}

fn uplink_target(ifname: String, ifindex: u32) -> Target {
    Target {
        what: format!("uplink {ifname}"),
        ifname,
        ifindex,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_flags_mean_default_routes_none_or_names() {
        assert_eq!(
            UplinkChoice::from_flags(&[]),
            Ok(UplinkChoice::DefaultRoutes)
        );
        assert_eq!(
            UplinkChoice::from_flags(&["none".into()]),
            Ok(UplinkChoice::Off)
        );
        assert_eq!(
            UplinkChoice::from_flags(&["eth0".into(), "eth1".into()]),
            Ok(UplinkChoice::Named(vec!["eth0".into(), "eth1".into()]))
        );
        assert_eq!(
            UplinkChoice::from_flags(&["eth0".into(), "none".into()]),
            Err(UplinkChoiceError)
        );
    }

    #[test]
    fn a_named_uplink_that_does_not_exist_is_a_problem_not_a_target() {
        let (targets, problems) = resolve(
            &UplinkChoice::Named(vec!["lo".into(), "nwnosuchif0".into()]),
            &[],
        );
        assert_eq!(targets.len(), 1);
        assert_eq!((targets[0].ifname.as_str(), targets[0].ifindex), ("lo", 1));
        assert_eq!(problems, vec!["uplink nwnosuchif0: no such interface"]);
    }

    #[test]
    fn excluded_interfaces_never_get_the_shield() {
        let (targets, problems) = resolve(&UplinkChoice::Named(vec!["lo".into()]), &[1]);
        assert!(targets.is_empty());
        assert_eq!(problems.len(), 1);
        let (targets, _) = resolve(&UplinkChoice::Off, &[]);
        assert!(targets.is_empty());
    }
}
