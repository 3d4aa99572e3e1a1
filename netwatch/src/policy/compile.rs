//! Compiles endpoint specs into the exact entries of the datapath's maps.
//!
//! The datapath does one LPM lookup per table, and an LPM lookup returns only
//! the longest matching prefix. So every allow-list entry carries its own
//! port rules plus those of every shorter allow-listed prefix (same scope and
//! family) that covers it; see [`AllowRules`].

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::IpAddr,
};

use netwatch_common::{
    endpoint::{
        AllowRules, EndpointPolicy, MAX_PORT_RULES, MacvlanPort, MacvlanPortKey, PortRule,
        PublishedKey, SCOPE_BITS, ScopedV4, ScopedV6, policy_flags,
    },
    flow::family,
    names::{
        ENDPOINTS_MAX_ENTRIES, HOST_ADDR_MAX_ENTRIES, MACVLAN_PORTS_MAX_ENTRIES, MAP_ALLOW_V4,
        MAP_ALLOW_V6, MAP_ENDPOINTS, MAP_HOST_V4, MAP_HOST_V6, MAP_MACVLAN_PORTS, MAP_NET_V4,
        MAP_NET_V6, MAP_PUBLISHED, PREFIX_MAX_ENTRIES, PUBLISHED_MAX_ENTRIES,
    },
};

use super::{cidr::Cidr, rule::AllowRule, spec::InterfacePolicy};

/// Map entries for the datapath. Each trie entry is `(prefix_len, key)` (plus
/// the value for ALLOW), where `prefix_len` counts the [`SCOPE_BITS`] of the
/// scope. Every vector is free of duplicates and in a fixed order (by
/// ifindex; by scope, then prefix; by address), so two compilations of the
/// same state compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledTables {
    /// `ENDPOINTS`: ifindex → policy.
    pub endpoints: Vec<(u32, EndpointPolicy)>,
    /// `NET_V4`, value [`netwatch_common::endpoint::NET_MEMBER`].
    pub net_v4: Vec<(u32, ScopedV4)>,
    /// `NET_V6`, value [`netwatch_common::endpoint::NET_MEMBER`].
    pub net_v6: Vec<(u32, ScopedV6)>,
    /// `ALLOW_V4`.
    pub allow_v4: Vec<(u32, ScopedV4, AllowRules)>,
    /// `ALLOW_V6`.
    pub allow_v6: Vec<(u32, ScopedV6, AllowRules)>,
    /// `HOST_V4` keys.
    pub host_v4: Vec<[u8; 4]>,
    /// `HOST_V6` keys.
    pub host_v6: Vec<[u8; 16]>,
    /// `MACVLAN_PORTS`: which endpoint owns which MAC on which parent. Not
    /// derived from the specs: the agent's plan sets it (see
    /// [`CompiledTables::with_macvlan_ports`]).
    pub macvlan_ports: Vec<(MacvlanPortKey, MacvlanPort)>,
    /// `PUBLISHED`: the published ports of endpoints whose policy carries
    /// [`policy_flags::PUBLISHED`], with their `published_access` bits (a
    /// port bound both to loopback and beyond is open to anyone).
    pub published: Vec<(PublishedKey, u32)>,
}

/// Why a set of endpoint specs cannot be written to the maps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "endpoint {ifindex}: policy flags {flags:#x} include bits netwatch does not define (known bits: {known:#x})",
        known = policy_flags::ALL
    )]
    UnknownFlags { ifindex: u32, flags: u32 },
    #[error("endpoint {ifindex} is given twice with different policies")]
    DuplicateEndpoint { ifindex: u32 },
    #[error(
        "scope {scope} is shared by endpoints {first} and {second}, whose networks or allow-lists differ; endpoints that share a scope share its entries"
    )]
    ScopeCollision { scope: u32, first: u32, second: u32 },
    #[error(
        "allow-list prefix {prefix} (scope {scope}) needs {count} port rules once the rules of the prefixes covering it are merged in; at most {MAX_PORT_RULES} fit"
    )]
    TooManyPortRules {
        scope: u32,
        prefix: Cidr,
        count: usize,
    },
    #[error("map {map} would need {count} entries; it holds at most {max}")]
    MapFull {
        map: &'static str,
        count: usize,
        max: u32,
    },
}

/// Compiles `endpoints` and the host's own addresses into map entries.
///
/// # Errors
///
/// See [`CompileError`]: undefined policy flags, one ifindex with two
/// policies, one scope with two different rule sets, an allow-listed prefix
/// with more than [`MAX_PORT_RULES`] rules after merging, or more entries
/// than a map holds.
pub fn compile(
    endpoints: &[InterfacePolicy],
    host_addrs: &[IpAddr],
) -> Result<CompiledTables, CompileError> {
    let mut by_ifindex: BTreeMap<u32, &InterfacePolicy> = BTreeMap::new();
    let mut scopes: BTreeMap<u32, (u32, ScopeRules)> = BTreeMap::new();
    for spec in endpoints {
        if spec.policy.flags & !policy_flags::ALL != 0 {
            return Err(CompileError::UnknownFlags {
                ifindex: spec.ifindex,
                flags: spec.policy.flags,
            });
        }
        let rules = ScopeRules::of(spec);
        match by_ifindex.entry(spec.ifindex) {
            Entry::Vacant(slot) => {
                slot.insert(spec);
            }
            Entry::Occupied(seen) => {
                if seen.get().policy != spec.policy || ScopeRules::of(seen.get()) != rules {
                    return Err(CompileError::DuplicateEndpoint {
                        ifindex: spec.ifindex,
                    });
                }
                continue;
            }
        }
        match scopes.entry(spec.policy.scope) {
            Entry::Vacant(slot) => {
                slot.insert((spec.ifindex, rules));
            }
            Entry::Occupied(seen) => {
                let (first, first_rules) = seen.get();
                if *first_rules != rules {
                    return Err(CompileError::ScopeCollision {
                        scope: spec.policy.scope,
                        first: *first,
                        second: spec.ifindex,
                    });
                }
            }
        }
    }

    let mut tables = CompiledTables {
        endpoints: by_ifindex
            .iter()
            .map(|(&ifindex, spec)| (ifindex, spec.policy))
            .collect(),
        ..CompiledTables::default()
    };
    let mut published: BTreeMap<PublishedKey, u32> = BTreeMap::new();
    for (&ifindex, spec) in &by_ifindex {
        if !spec.policy.has(policy_flags::PUBLISHED) {
            continue;
        }
        for rule in &spec.published {
            let (family, addr) = match rule.addr {
                IpAddr::V4(v4) => {
                    let mut addr = [0; 16];
                    addr[..4].copy_from_slice(&v4.octets());
                    (family::IPV4, addr)
                }
                IpAddr::V6(v6) => (family::IPV6, v6.octets()),
            };
            let key = PublishedKey {
                ifindex,
                port: rule.port,
                proto: rule.proto,
                family,
                addr,
            };
            *published.entry(key).or_default() |= rule.access();
        }
    }
    tables.published = published.into_iter().collect();
    for (&scope, (_, rules)) in &scopes {
        for network in &rules.networks {
            match scoped_key(scope, network) {
                Key::V4(len, key) => tables.net_v4.push((len, key)),
                Key::V6(len, key) => tables.net_v6.push((len, key)),
            }
        }
        for (prefix, allow) in merged_allow_lists(scope, &rules.allow)? {
            match scoped_key(scope, &prefix) {
                Key::V4(len, key) => tables.allow_v4.push((len, key, allow)),
                Key::V6(len, key) => tables.allow_v6.push((len, key, allow)),
            }
        }
    }
    for addr in host_addrs {
        match addr {
            IpAddr::V4(v4) => tables.host_v4.push(v4.octets()),
            IpAddr::V6(v6) => tables.host_v6.push(v6.octets()),
        }
    }
    tables.host_v4.sort_unstable();
    tables.host_v4.dedup();
    tables.host_v6.sort_unstable();
    tables.host_v6.dedup();
    // Scopes are visited in order and each scope's prefixes are already
    // sorted and distinct, so the trie vectors need no further sorting.
    tables.check_capacity()?;
    Ok(tables)
}

impl CompiledTables {
    /// These tables with `ports` as the `MACVLAN_PORTS` entries (sorted,
    /// one per key).
    ///
    /// # Errors
    /// More ports than the map holds.
    pub fn with_macvlan_ports(
        mut self,
        ports: &[(MacvlanPortKey, MacvlanPort)],
    ) -> Result<CompiledTables, CompileError> {
        let mut ports = ports.to_vec();
        ports.sort_by_key(|(key, _)| (key.parent, key.mac));
        ports.dedup_by_key(|(key, _)| *key);
        self.macvlan_ports = ports;
        self.check_capacity()?;
        Ok(self)
    }

    /// Refuses tables that would overflow a map, before anything is written:
    /// a map that fills up halfway through an update leaves the datapath
    /// enforcing a policy nobody asked for.
    fn check_capacity(&self) -> Result<(), CompileError> {
        let sizes = [
            (MAP_ENDPOINTS, self.endpoints.len(), ENDPOINTS_MAX_ENTRIES),
            (MAP_NET_V4, self.net_v4.len(), PREFIX_MAX_ENTRIES),
            (MAP_NET_V6, self.net_v6.len(), PREFIX_MAX_ENTRIES),
            (MAP_ALLOW_V4, self.allow_v4.len(), PREFIX_MAX_ENTRIES),
            (MAP_ALLOW_V6, self.allow_v6.len(), PREFIX_MAX_ENTRIES),
            (MAP_HOST_V4, self.host_v4.len(), HOST_ADDR_MAX_ENTRIES),
            (MAP_HOST_V6, self.host_v6.len(), HOST_ADDR_MAX_ENTRIES),
            (
                MAP_MACVLAN_PORTS,
                self.macvlan_ports.len(),
                MACVLAN_PORTS_MAX_ENTRIES,
            ),
            (MAP_PUBLISHED, self.published.len(), PUBLISHED_MAX_ENTRIES),
        ];
        for (map, count, max) in sizes {
            if count > max as usize {
                return Err(CompileError::MapFull { map, count, max });
            }
        }
        Ok(())
    }
}

/// A scope's rule set with order and repetition removed, so that endpoints
/// listing the same rules differently still share a scope.
#[derive(PartialEq, Eq)]
struct ScopeRules {
    networks: Vec<Cidr>,
    allow: Vec<AllowRule>,
}

impl ScopeRules {
    fn of(spec: &InterfacePolicy) -> ScopeRules {
        let mut networks = spec.networks.clone();
        networks.sort_unstable();
        networks.dedup();
        let mut allow = spec.allow.clone();
        allow.sort_unstable();
        allow.dedup();
        ScopeRules { networks, allow }
    }
}

enum Key {
    V4(u32, ScopedV4),
    V6(u32, ScopedV6),
}

/// The trie key of `prefix` in `scope`: the scope's bits first, so that a
/// lookup can only match entries of its own scope.
fn scoped_key(scope: u32, prefix: &Cidr) -> Key {
    let len = SCOPE_BITS + u32::from(prefix.prefix_len());
    let scope = scope.to_be_bytes();
    match prefix.addr() {
        IpAddr::V4(addr) => Key::V4(
            len,
            ScopedV4 {
                scope,
                addr: addr.octets(),
            },
        ),
        IpAddr::V6(addr) => Key::V6(
            len,
            ScopedV6 {
                scope,
                addr: addr.octets(),
            },
        ),
    }
}

/// One entry per distinct allow-listed prefix, holding the simplified union
/// of its rules and those of every prefix that covers it. `rules` is sorted,
/// so prefixes come out in order.
fn merged_allow_lists(
    scope: u32,
    rules: &[AllowRule],
) -> Result<Vec<(Cidr, AllowRules)>, CompileError> {
    let mut by_prefix: BTreeMap<Cidr, Vec<PortRule>> = BTreeMap::new();
    for rule in rules {
        by_prefix
            .entry(rule.cidr)
            .or_default()
            .push(rule.to_port_rule());
    }
    let mut entries = Vec::with_capacity(by_prefix.len());
    for prefix in by_prefix.keys() {
        let inherited = by_prefix
            .iter()
            .filter(|(outer, _)| outer.covers(prefix))
            .flat_map(|(_, rules)| rules.iter().copied());
        let merged = simplify(inherited);
        if merged.len() > MAX_PORT_RULES {
            return Err(CompileError::TooManyPortRules {
                scope,
                prefix: *prefix,
                count: merged.len(),
            });
        }
        let mut value = AllowRules {
            count: merged.len() as u32,
            ..AllowRules::default()
        };
        for (slot, rule) in value.rules.iter_mut().zip(&merged) {
            *slot = *rule;
        }
        entries.push((*prefix, value));
    }
    Ok(entries)
}

/// Whether every packet that `narrow` lets through, `wide` lets through too
/// (by [`netwatch_common::endpoint::port_rule_matches`]).
fn subsumes(wide: &PortRule, narrow: &PortRule) -> bool {
    (wide.proto == 0 || wide.proto == narrow.proto) && (wide.port == 0 || wide.port == narrow.port)
}

/// The rules that no other rule subsumes, sorted by (proto, port): the
/// smallest set that matches exactly what the input matches.
fn simplify(rules: impl Iterator<Item = PortRule>) -> Vec<PortRule> {
    let mut rules: Vec<PortRule> = rules
        .map(|r| PortRule {
            proto: r.proto,
            _pad: 0,
            port: r.port,
        })
        .collect();
    rules.sort_unstable_by_key(|r| (r.proto, r.port));
    rules.dedup();
    rules
        .iter()
        .filter(|narrow| {
            !rules
                .iter()
                .any(|wide| wide != *narrow && subsumes(wide, narrow))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netwatch_common::{
        endpoint::port_rule_matches,
        packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, RulePort},
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn spec(ifindex: u32, scope: u32, networks: &[&str], allow: &[&str]) -> InterfacePolicy {
        InterfacePolicy {
            ifindex,
            policy: EndpointPolicy {
                flags: policy_flags::ENFORCE | policy_flags::HAS_IPV4,
                scope,
                ipv4: [10, 0, 0, ifindex as u8],
                ..EndpointPolicy::default()
            },
            networks: networks.iter().map(|s| cidr(s)).collect(),
            published: Vec::new(),
            allow: allow.iter().map(|s| rule(s)).collect(),
        }
    }

    fn pr(proto: u8, port: u16) -> PortRule {
        PortRule {
            proto,
            _pad: 0,
            port,
        }
    }

    fn rules_of(value: &AllowRules) -> Vec<PortRule> {
        value.rules[..value.count as usize].to_vec()
    }

    fn v4_entry<'a>(
        tables: &'a CompiledTables,
        scope: u32,
        prefix: &str,
    ) -> Option<&'a AllowRules> {
        let Key::V4(len, key) = scoped_key(scope, &cidr(prefix)) else {
            panic!("{prefix} is not IPv4");
        };
        tables
            .allow_v4
            .iter()
            .find(|(l, k, _)| *l == len && *k == key)
            .map(|(_, _, v)| v)
    }

    #[test]
    fn encodes_scope_then_masked_address() {
        let tables = compile(
            &[spec(7, 0x0102_0304, &["10.1.0.0/16", "fd00:1::/64"], &[])],
            &[],
        )
        .expect("compiles");
        assert_eq!(
            tables.net_v4,
            vec![(
                48,
                ScopedV4 {
                    scope: [1, 2, 3, 4],
                    addr: [10, 1, 0, 0],
                }
            )]
        );
        let mut v6 = [0; 16];
        v6[..4].copy_from_slice(&[0xfd, 0, 0, 1]);
        assert_eq!(
            tables.net_v6,
            vec![(
                96,
                ScopedV6 {
                    scope: [1, 2, 3, 4],
                    addr: v6,
                }
            )]
        );
        assert_eq!(tables.endpoints.len(), 1);
        assert_eq!(tables.endpoints[0].0, 7);
    }

    #[test]
    fn longer_prefixes_inherit_the_rules_of_covering_ones() {
        let tables = compile(
            &[spec(
                1,
                9,
                &["10.0.0.0/24"],
                &[
                    "10.0.0.0/8:53/udp",
                    "10.1.0.0/16:443/tcp",
                    "10.1.2.0/24:5432/tcp",
                    "10.2.0.0/16:80/tcp",
                    "fd00::/64",
                ],
            )],
            &[],
        )
        .expect("compiles");
        let get = |p| v4_entry(&tables, 9, p).map(rules_of);
        assert_eq!(get("10.0.0.0/8"), Some(vec![pr(IPPROTO_UDP, 53)]));
        assert_eq!(
            get("10.1.0.0/16"),
            Some(vec![pr(IPPROTO_TCP, 443), pr(IPPROTO_UDP, 53)])
        );
        assert_eq!(
            get("10.1.2.0/24"),
            Some(vec![
                pr(IPPROTO_TCP, 443),
                pr(IPPROTO_TCP, 5432),
                pr(IPPROTO_UDP, 53)
            ])
        );
        assert_eq!(
            get("10.2.0.0/16"),
            Some(vec![pr(IPPROTO_TCP, 80), pr(IPPROTO_UDP, 53)])
        );
        assert_eq!(tables.allow_v4.len(), 4);
        assert_eq!(tables.allow_v6.len(), 1);
        assert_eq!(rules_of(&tables.allow_v6[0].2), vec![pr(0, 0)]);
    }

    #[test]
    fn identical_prefixes_merge_and_subsumed_rules_go() {
        let tables = compile(
            &[spec(
                1,
                1,
                &[],
                &[
                    "10.0.0.0/8:53/udp",
                    "10.0.0.0/8:53/udp",
                    "10.0.0.0/8:53/tcp",
                    "10.0.0.0/8:53",
                    "10.0.0.0/8:*/tcp",
                    "10.0.0.0/8:443/tcp",
                    "10.0.0.0/8:*/icmp",
                    "10.1.0.0/16",
                    "10.1.0.0/16:22/tcp",
                ],
            )],
            &[],
        )
        .expect("compiles");
        assert_eq!(tables.allow_v4.len(), 2);
        assert_eq!(
            v4_entry(&tables, 1, "10.0.0.0/8").map(rules_of),
            Some(vec![pr(0, 53), pr(IPPROTO_ICMP, 0), pr(IPPROTO_TCP, 0)])
        );
        assert_eq!(
            v4_entry(&tables, 1, "10.1.0.0/16").map(rules_of),
            Some(vec![pr(0, 0)])
        );
    }

    #[test]
    fn too_many_rules_after_merging_names_the_prefix() {
        let mut allow: Vec<String> = (1..=5).map(|p| format!("10.0.0.0/8:{p}/tcp")).collect();
        allow.extend((1..=4).map(|p| format!("10.1.0.0/16:{p}/udp")));
        let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
        let err = compile(&[spec(1, 1, &[], &allow)], &[]).expect_err("9 rules");
        assert_eq!(
            err,
            CompileError::TooManyPortRules {
                scope: 1,
                prefix: cidr("10.1.0.0/16"),
                count: 9
            }
        );
        assert!(err.to_string().contains("10.1.0.0/16"), "{err}");

        // Eight distinct rules fit.
        let ok: Vec<String> = (1..=8).map(|p| format!("10.0.0.0/8:{p}/tcp")).collect();
        let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
        let tables = compile(&[spec(1, 1, &[], &ok)], &[]).expect("8 rules fit");
        assert_eq!(tables.allow_v4[0].2.count, 8);
    }

    #[test]
    fn endpoints_sharing_a_scope_share_entries() {
        let a = spec(1, 5, &["10.0.0.0/24", "fd00::/64"], &["1.1.1.1:53/udp"]);
        let b = spec(
            2,
            5,
            &["fd00::/64", "10.0.0.0/24", "10.0.0.0/24"],
            &["1.1.1.1:53/udp"],
        );
        let tables = compile(&[a.clone(), b, a], &[]).expect("compiles");
        assert_eq!(
            tables.endpoints.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(tables.net_v4.len(), 1);
        assert_eq!(tables.net_v6.len(), 1);
        assert_eq!(tables.allow_v4.len(), 1);
    }

    #[test]
    fn rejects_scope_collisions_duplicates_and_unknown_flags() {
        let a = spec(1, 5, &["10.0.0.0/24"], &[]);
        let b = spec(2, 5, &["10.0.1.0/24"], &[]);
        assert_eq!(
            compile(&[a.clone(), b], &[]),
            Err(CompileError::ScopeCollision {
                scope: 5,
                first: 1,
                second: 2
            })
        );
        let c = spec(2, 5, &["10.0.0.0/24"], &["1.1.1.1"]);
        assert!(matches!(
            compile(&[a.clone(), c], &[]),
            Err(CompileError::ScopeCollision { .. })
        ));
        let mut other_mac = a.clone();
        other_mac.policy.mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            compile(&[a.clone(), other_mac], &[]),
            Err(CompileError::DuplicateEndpoint { ifindex: 1 })
        );
        let mut bad = a;
        bad.policy.flags |= 1 << 9;
        let err = compile(&[bad], &[]).expect_err("unknown flag");
        assert!(matches!(err, CompileError::UnknownFlags { ifindex: 1, .. }));
        assert!(err.to_string().contains("0x20"), "{err}");
    }

    #[test]
    fn host_addresses_split_by_family_and_deduplicate() {
        let addrs: Vec<IpAddr> = ["10.0.0.1", "fe80::1", "10.0.0.1", "192.168.1.1", "fe80::1"]
            .iter()
            .map(|s| s.parse().expect("address"))
            .collect();
        let tables = compile(&[], &addrs).expect("compiles");
        assert_eq!(tables.host_v4, vec![[10, 0, 0, 1], [192, 168, 1, 1]]);
        assert_eq!(
            tables.host_v6,
            vec![Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets()]
        );
    }

    #[test]
    fn refuses_tables_larger_than_their_maps() {
        let addrs: Vec<IpAddr> = (0..=HOST_ADDR_MAX_ENTRIES)
            .map(|i| IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let err = compile(&[], &addrs).expect_err("too many host addresses");
        assert_eq!(
            err,
            CompileError::MapFull {
                map: MAP_HOST_V4,
                count: HOST_ADDR_MAX_ENTRIES as usize + 1,
                max: HOST_ADDR_MAX_ENTRIES
            }
        );
        assert!(compile(&[], &addrs[1..]).is_ok());
    }

    /// What a BPF LPM trie lookup returns: the entry with the longest prefix
    /// whose first `prefix_len` bits equal the lookup key's.
    fn lpm<'a, V>(
        entries: impl Iterator<Item = (u32, Vec<u8>, &'a V)>,
        key: &[u8],
    ) -> Option<&'a V> {
        entries
            .filter(|(len, entry_key, _)| {
                (0..*len as usize).all(|bit| {
                    let byte = bit / 8;
                    let mask = 0x80 >> (bit % 8);
                    entry_key[byte] & mask == key[byte] & mask
                })
            })
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, _, v)| v)
    }

    fn lookup_key(scope: u32, addr: &IpAddr) -> Vec<u8> {
        let mut key = scope.to_be_bytes().to_vec();
        match addr {
            IpAddr::V4(a) => key.extend(a.octets()),
            IpAddr::V6(a) => key.extend(a.octets()),
        }
        key
    }

    fn compiled_allow<'a>(
        tables: &'a CompiledTables,
        scope: u32,
        addr: &IpAddr,
    ) -> Option<&'a AllowRules> {
        let key = lookup_key(scope, addr);
        match addr {
            IpAddr::V4(_) => lpm(
                tables
                    .allow_v4
                    .iter()
                    .map(|(l, k, v)| (*l, [k.scope.as_slice(), k.addr.as_slice()].concat(), v)),
                &key,
            ),
            IpAddr::V6(_) => lpm(
                tables
                    .allow_v6
                    .iter()
                    .map(|(l, k, v)| (*l, [k.scope.as_slice(), k.addr.as_slice()].concat(), v)),
                &key,
            ),
        }
    }

    fn compiled_in_network(tables: &CompiledTables, scope: u32, addr: &IpAddr) -> bool {
        let key = lookup_key(scope, addr);
        match addr {
            IpAddr::V4(_) => lpm(
                tables
                    .net_v4
                    .iter()
                    .map(|(l, k)| (*l, [k.scope.as_slice(), k.addr.as_slice()].concat(), &())),
                &key,
            )
            .is_some(),
            IpAddr::V6(_) => lpm(
                tables
                    .net_v6
                    .iter()
                    .map(|(l, k)| (*l, [k.scope.as_slice(), k.addr.as_slice()].concat(), &())),
                &key,
            )
            .is_some(),
        }
    }

    /// Addresses from a small space, so that random prefixes nest and overlap.
    fn random_addr(rng: &mut StdRng, v6: bool) -> IpAddr {
        let a = rng.random_range(0..2u8);
        let b = rng.random_range(0..4u8);
        let c = rng.random::<u8>() & 0xc3;
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00 | u16::from(a),
                u16::from(b),
                0,
                0,
                0,
                0,
                0,
                u16::from(c),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, a, b, c))
        }
    }

    fn random_prefix(rng: &mut StdRng, v6: bool) -> Cidr {
        const V4: [u8; 10] = [0, 8, 15, 16, 20, 24, 26, 30, 31, 32];
        const V6: [u8; 10] = [0, 8, 15, 16, 24, 32, 64, 120, 127, 128];
        let lens = if v6 { V6 } else { V4 };
        let len = lens[rng.random_range(0..lens.len())];
        Cidr::new(random_addr(rng, v6), len).expect("valid prefix length")
    }

    fn random_rule(rng: &mut StdRng, v6: bool) -> AllowRule {
        const PROTOS: [u8; 5] = [0, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6];
        const PORTS: [u16; 4] = [0, 53, 80, 443];
        let proto = PROTOS[rng.random_range(0..PROTOS.len())];
        let port = if matches!(proto, 0 | IPPROTO_TCP | IPPROTO_UDP) {
            PORTS[rng.random_range(0..PORTS.len())]
        } else {
            0
        };
        AllowRule {
            cidr: random_prefix(rng, v6),
            proto,
            port,
        }
    }

    #[test]
    fn compiled_lookups_match_the_rules_as_written() {
        const PROTOS: [u8; 6] = [
            0,
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_ICMP,
            IPPROTO_ICMPV6,
            47,
        ];
        const PORTS: [Option<u16>; 5] = [None, Some(53), Some(80), Some(443), Some(1)];
        let mut rng = StdRng::seed_from_u64(0x6e65_7477_6174_6368);
        let (mut checked, mut too_many) = (0, 0);
        for round in 0..400 {
            let specs: Vec<InterfacePolicy> = (0..3u32)
                .map(|i| InterfacePolicy {
                    ifindex: i + 1,
                    policy: EndpointPolicy {
                        scope: i,
                        ..EndpointPolicy::default()
                    },
                    networks: (0..rng.random_range(0..4))
                        .map(|_| {
                            let v6 = rng.random_bool(0.5);
                            random_prefix(&mut rng, v6)
                        })
                        .collect(),
                    published: Vec::new(),
                    allow: (0..rng.random_range(0..10))
                        .map(|_| {
                            let v6 = rng.random_bool(0.5);
                            random_rule(&mut rng, v6)
                        })
                        .collect(),
                })
                .collect();
            let tables = match compile(&specs, &[]) {
                Ok(tables) => tables,
                Err(CompileError::TooManyPortRules { .. }) => {
                    too_many += 1;
                    continue;
                }
                Err(e) => panic!("round {round}: {e}"),
            };
            let values = tables.allow_v4.iter().map(|(_, _, v)| v);
            for value in values.chain(tables.allow_v6.iter().map(|(_, _, v)| v)) {
                let rules = rules_of(value);
                for (i, a) in rules.iter().enumerate() {
                    for (j, b) in rules.iter().enumerate() {
                        assert!(
                            i == j || !subsumes(a, b),
                            "round {round}: {rules:?} not simplified"
                        );
                    }
                }
            }
            for spec in &specs {
                let scope = spec.policy.scope;
                for _ in 0..50 {
                    let v6 = rng.random_bool(0.5);
                    let addr = random_addr(&mut rng, v6);
                    assert_eq!(
                        compiled_in_network(&tables, scope, &addr),
                        spec.networks.iter().any(|n| n.contains(&addr)),
                        "round {round}: in_network({addr}) for {:?}",
                        spec.networks
                    );
                    let entry = compiled_allow(&tables, scope, &addr);
                    for proto in PROTOS {
                        for port in PORTS {
                            let port = RulePort::from_option(port);
                            let want = spec.allow.iter().any(|r| {
                                r.cidr.contains(&addr)
                                    && port_rule_matches(&r.to_port_rule(), proto, port)
                            });
                            let got = entry.is_some_and(|e| e.matches(proto, port));
                            assert_eq!(
                                got, want,
                                "round {round}: {addr} proto {proto} port {port:?}, rules {:?}, entry {entry:?}",
                                spec.allow
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(
            too_many < 100,
            "{too_many} of 400 rounds overflowed; the test checks too little"
        );
        assert!(checked > 100_000, "{checked}");
    }
}
