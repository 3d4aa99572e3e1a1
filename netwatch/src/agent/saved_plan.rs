//! The agent's last plan, kept on disk: which bridges belong to which
//! networks, and with what policy, so that a restarted agent — after a
//! reboot, before dockerd answers — can guard bridges and veths as they
//! appear.
//!
//! What is kept are the inputs of [`super::plan()`] for bridge networks
//! (name, bridge device name, `internal`, subnets, gateways, labels), not
//! compiled maps: ifindexes change across a reboot, device names do not
//! (Docker names a network's bridge after its id, which its local store
//! keeps). The file is replaced atomically (written beside, synced, then
//! renamed), so a crash leaves the old plan or the new one.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::NetworkState;
use crate::policy::Cidr;

/// The file's format. Bump it when a field changes meaning; a file of
/// another format is salvaged ([`Loaded::Salvaged`]), never trusted whole.
pub const FORMAT: u32 = 1;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "plan.json";

/// Where the plan is kept under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// One bridge network as the last plan had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNetwork {
    pub name: String,
    /// The bridge device's name (`docker0`, `br-<id12>`).
    pub bridge: String,
    pub internal: bool,
    /// Whether the plan denied egress (`internal`, or a label): what a
    /// salvage of a file of another format goes by.
    pub deny_egress: bool,
    pub subnets: Vec<String>,
    pub gateways: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

/// The saved plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    /// `netwatch <version>`, for whoever reads the file.
    pub written_by: String,
    pub networks: Vec<SavedNetwork>,
}

impl SavedPlan {
    /// The plan's bridge networks (others have no device that survives a
    /// reboot under the same name, or nothing to attach before Docker
    /// answers).
    pub fn of(networks: &[NetworkState], deny_egress: impl Fn(&NetworkState) -> bool) -> Self {
        SavedPlan {
            format: FORMAT,
            written_by: format!("netwatch {}", env!("CARGO_PKG_VERSION")),
            networks: networks
                .iter()
                .filter(|n| n.driver == "bridge")
                .filter_map(|n| {
                    let (bridge, _) = n.bridge.as_ref()?;
                    Some(SavedNetwork {
                        name: n.name.clone(),
                        bridge: bridge.clone(),
                        internal: n.internal,
                        deny_egress: deny_egress(n),
                        subnets: n.subnets.iter().map(ToString::to_string).collect(),
                        gateways: n.gateways.clone(),
                        labels: n.labels.clone(),
                    })
                })
                .collect(),
        }
    }

    /// The networks as the planner takes them, bridges not yet resolved
    /// (ifindex 0). A subnet that does not parse drops its network (a
    /// policy without its subnets would be wrong, not just weaker).
    pub fn networks(&self) -> Vec<NetworkState> {
        self.networks
            .iter()
            .filter_map(|n| {
                let subnets: Result<Vec<Cidr>, _> =
                    n.subnets.iter().map(|s| s.parse::<Cidr>()).collect();
                Some(NetworkState {
                    name: n.name.clone(),
                    driver: "bridge".to_owned(),
                    internal: n.internal,
                    bridge: Some((n.bridge.clone(), 0)),
                    macvlan_parent: None,
                    overlay_sandbox: None,
                    subnets: subnets.ok()?,
                    gateways: n.gateways.clone(),
                    labels: n.labels.clone(),
                })
            })
            .collect()
    }

    /// Writes the plan to `path` atomically.
    ///
    /// # Errors
    /// The directory cannot be created or the file written.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension("json.new");
        let mut file = fs::File::create(&temporary)?;
        let text = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    }
}

/// What was found on disk.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    /// This version's plan, whole.
    Whole(SavedPlan),
    /// No file: a first start (or a state directory that was wiped).
    Missing,
    /// A file of another format, or one this version cannot read whole:
    /// only the networks it marked as denying egress are kept, failing
    /// closed (no labels: no allow-list, no gateway access).
    Salvaged { plan: SavedPlan, problem: String },
    /// Nothing could be read from it.
    Unreadable(String),
}

/// Reads the plan at `path`.
pub fn load(path: &Path) -> Loaded {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Unreadable(e.to_string()),
    };
    let value: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(value) => value,
        Err(e) => return Loaded::Unreadable(format!("it is not JSON ({e})")),
    };
    let problem = match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(format) if format == u64::from(FORMAT) => {
            match serde_json::from_value::<SavedPlan>(value.clone()) {
                Ok(plan) => return Loaded::Whole(plan),
                Err(e) => format!("it does not parse as this version's plan ({e})"),
            }
        }
        Some(format) => format!("it is of format {format} (this netwatch writes {FORMAT})"),
        None => "it has no format number".to_owned(),
    };
    let networks = salvage(&value);
    Loaded::Salvaged {
        plan: SavedPlan {
            format: FORMAT,
            written_by: "salvaged".to_owned(),
            networks,
        },
        problem,
    }
}

/// From any JSON: the networks with a bridge name and subnets that say
/// they were internal or denied egress, kept as internal with no labels.
fn salvage(value: &serde_json::Value) -> Vec<SavedNetwork> {
    let Some(networks) = value.get("networks").and_then(|n| n.as_array()) else {
        return Vec::new();
    };
    networks
        .iter()
        .filter_map(|n| {
            let flag = |key: &str| n.get(key).and_then(serde_json::Value::as_bool) == Some(true);
            if !flag("internal") && !flag("deny_egress") {
                return None;
            }
            let text = |key: &str| n.get(key)?.as_str().map(str::to_owned);
            let subnets: Vec<String> = n
                .get("subnets")?
                .as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<_>>()?;
            if subnets.is_empty() || subnets.iter().any(|s| s.parse::<Cidr>().is_err()) {
                return None;
            }
            let gateways = n
                .get("gateways")
                .and_then(|g| g.as_array())
                .map(|g| {
                    g.iter()
                        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                        .collect()
                })
                .unwrap_or_default();
            Some(SavedNetwork {
                name: text("name").unwrap_or_else(|| "(unnamed)".to_owned()),
                bridge: text("bridge")?,
                internal: true,
                deny_egress: true,
                subnets,
                gateways,
                labels: BTreeMap::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, internal: bool, labels: &[(&str, &str)]) -> NetworkState {
        NetworkState {
            name: name.into(),
            driver: "bridge".into(),
            internal,
            bridge: Some((format!("br-{name}"), 42)),
            macvlan_parent: None,
            overlay_sandbox: None,
            subnets: vec!["172.30.0.0/24".parse().unwrap()],
            gateways: vec!["172.30.0.1".parse().unwrap()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("netwatch-saved-plan-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_plan_reads_back_whole_with_bridges_unresolved() {
        let dir = temp_dir("whole");
        let networks = vec![
            network("db", true, &[("netwatch.allow", "10.9.0.0/16")]),
            network("web", false, &[]),
        ];
        let plan = SavedPlan::of(&networks, |n| n.internal);
        plan.save(&path(&dir)).unwrap();
        let Loaded::Whole(read) = load(&path(&dir)) else {
            panic!("not read whole");
        };
        assert_eq!(read, plan);
        let mut expected = networks.clone();
        for n in &mut expected {
            n.bridge.as_mut().unwrap().1 = 0;
        }
        assert_eq!(read.networks(), expected);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn networks_without_a_bridge_device_are_not_saved() {
        let mut macvlan = network("lan", true, &[]);
        macvlan.driver = "macvlan".into();
        let mut gone = network("gone", true, &[]);
        gone.bridge = None;
        let plan = SavedPlan::of(&[macvlan, gone, network("db", true, &[])], |_| true);
        let names: Vec<&str> = plan.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["db"]);
    }

    #[test]
    fn a_missing_plan_is_missing_and_garbage_is_unreadable() {
        let dir = temp_dir("garbage");
        assert_eq!(load(&path(&dir)), Loaded::Missing);
        fs::create_dir_all(&dir).unwrap();
        fs::write(path(&dir), b"\x00not json").unwrap();
        assert!(matches!(load(&path(&dir)), Loaded::Unreadable(_)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plan_of_another_format_keeps_only_its_internal_networks_failing_closed() {
        let dir = temp_dir("format");
        fs::create_dir_all(&dir).unwrap();
        let other = serde_json::json!({
            "format": 99,
            "networks": [
                {"name": "db", "bridge": "br-db", "internal": true,
                 "subnets": ["172.30.0.0/24"], "gateways": ["172.30.0.1"],
                 "labels": {"netwatch.gateway": "allow"}, "future": [1, 2]},
                {"name": "web", "bridge": "br-web", "internal": false,
                 "subnets": ["172.31.0.0/24"]},
                {"name": "odd", "bridge": "br-odd", "deny_egress": true,
                 "subnets": ["not a cidr"]},
                {"name": "nobridge", "internal": true, "subnets": ["172.29.0.0/24"]}
            ]
        });
        fs::write(path(&dir), other.to_string()).unwrap();
        let Loaded::Salvaged { plan, problem } = load(&path(&dir)) else {
            panic!("not salvaged");
        };
        assert!(problem.contains("format 99"), "{problem}");
        assert_eq!(plan.networks.len(), 1, "{plan:?}");
        let db = &plan.networks[0];
        assert_eq!((db.name.as_str(), db.bridge.as_str()), ("db", "br-db"));
        assert!(db.internal && db.deny_egress);
        assert!(db.labels.is_empty(), "labels dropped: fail closed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
