use super::*;

#[test]
fn destinations_parse_with_and_without_ports() {
    let d = parse_destination("10.0.0.5:5432/tcp").unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.proto),
        ("10.0.0.5", Some(5432), IPPROTO_TCP)
    );
    let d = parse_destination("db:53/udp").unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.proto),
        ("db", Some(53), IPPROTO_UDP)
    );
    let d = parse_destination("[fd00::5]:443").unwrap();
    assert_eq!(
        (d.host.as_str(), d.port, d.proto),
        ("fd00::5", Some(443), IPPROTO_TCP)
    );
    let d = parse_destination("fd00::5").unwrap();
    assert_eq!((d.host.as_str(), d.port, d.proto), ("fd00::5", None, 0));
    let d = parse_destination("203.0.113.7").unwrap();
    assert_eq!((d.port, d.proto), (None, 0));
}

#[test]
fn bad_destinations_say_what_is_expected() {
    assert!(
        parse_destination("10.0.0.5:0")
            .unwrap_err()
            .to_string()
            .contains("1-65535")
    );
    assert!(
        parse_destination("10.0.0.5:80/sctp")
            .unwrap_err()
            .to_string()
            .contains("tcp, udp or icmp")
    );
    assert!(
        parse_destination("[fd00::5:80")
            .unwrap_err()
            .to_string()
            .contains("unclosed")
    );
    assert!(
        parse_destination(":80")
            .unwrap_err()
            .to_string()
            .contains("no destination")
    );
}

mod paths {
    use std::net::IpAddr;

    use super::super::{
        ends::{self, Source},
        path::{self, PacketPath, Topology},
    };
    use super::*;
    use crate::{
        agent::{HostState, Plan, docker_state::host_state, plan},
        docker::{Container, Snapshot},
        host::interfaces::{EndpointError, MacAddr, Route, Unroutable},
    };

    /// The captured topology (see docker/testdata/README.md): nwcap-app on
    /// nwcap-front (observed) and nwcap-back (internal), nwcap-static on
    /// nwcap-back, nwcap-default on Docker's default bridge.
    fn world() -> (Snapshot, HostState, Plan) {
        let inventory = crate::docker::captured::inventory(&["app", "static", "default"]);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-front", "vethfront", 11);
        snapshot.set_veth_for_test("nwcap-app", "nwcap-back", "vethback", 13);
        snapshot.set_veth_for_test("nwcap-static", "nwcap-back", "vethstatic", 14);
        snapshot.set_veth_for_test("nwcap-default", "bridge", "vethdefault", 15);
        let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
        let plan = plan(&state);
        (snapshot, state, plan)
    }

    fn mac(text: &str) -> Option<MacAddr> {
        Some(text.parse().unwrap())
    }

    /// Routing as Docker sets it up: a container on a normal network has a
    /// default route through it; one only on an internal network has none.
    fn docker_routes(container: &Container, dst: IpAddr) -> Result<Route, EndpointError> {
        let on_back =
            dst.to_string().starts_with("172.29.0.") || dst.to_string().starts_with("fd00:29:");
        let via = |ifname: &str, ifindex, text| Route::Via {
            ifname: ifname.into(),
            ifindex,
            mac: mac(text),
        };
        Ok(match container.name.as_str() {
            "nwcap-app" if on_back => via("eth1", 3, "02:42:ac:1d:00:0a"),
            "nwcap-app" => via("eth0", 2, "02:42:ac:12:00:02"),
            "nwcap-static" if on_back => via("eth0", 2, "02:42:ac:1d:00:14"),
            "nwcap-default" => via("eth0", 2, "02:42:ac:11:00:02"),
            _ => Route::Unroutable(Unroutable::NoRoute),
        })
    }

    fn trace_with(
        uplink: Option<&str>,
        source: &str,
        destination: &str,
        route: impl Fn(&Container, IpAddr) -> Result<Route, EndpointError>,
    ) -> Result<Explanation> {
        let (snapshot, state, plan) = world();
        let pin_root = std::path::Path::new("/sys/fs/bpf/netwatch-unit-test");
        let topology = Topology {
            snapshot: &snapshot,
            state: &state,
            plan: &plan,
            uplink: uplink.map(str::to_string),
            pin_root,
        };
        let from = ends::source(&topology, source)?;
        let path: PacketPath =
            path::trace(&topology, from, &parse_destination(destination)?, route)?;
        Ok(explanation(destination, &path, &[]))
    }

    fn trace(uplink: Option<&str>, source: &str, destination: &str) -> Explanation {
        trace_with(uplink, source, destination, docker_routes)
            .unwrap_or_else(|e| panic!("{source} -> {destination}: {e:#}"))
    }

    fn error(uplink: Option<&str>, source: &str, destination: &str) -> String {
        match trace_with(uplink, source, destination, docker_routes) {
            Ok(e) => panic!("{source} -> {destination} should fail: {e:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn hops(e: &Explanation) -> Vec<(&str, &str, Option<&str>)> {
        e.hops
            .iter()
            .map(|h| (h.hook, h.verdict, h.reason))
            .collect()
    }

    #[test]
    fn container_to_container_on_a_shared_internal_network() {
        let e = trace(None, "nwcap-app", "nwcap-static:5432");
        assert_eq!(
            e.src,
            Some("172.29.0.10".parse().unwrap()),
            "the shared network's endpoint"
        );
        assert_eq!(e.dst, "172.29.0.20".parse::<IpAddr>().unwrap());
        assert_eq!(
            hops(&e),
            [
                ("from-container", "forwarded", None),
                ("to-container", "forwarded", None)
            ]
        );
        assert_eq!(e.hops[0].interface.as_deref(), Some("vethback"));
        assert_eq!(e.hops[1].interface.as_deref(), Some("vethstatic"));
        assert_eq!(e.hops[1].container.as_deref(), Some("nwcap-static"));
        assert_eq!((e.verdict, e.reason), ("forwarded", None));
        assert_eq!(
            e.rule,
            "172.29.0.10 is inside nwcap-back (172.29.0.0/24, fd00:29::/64)"
        );
    }

    #[test]
    fn a_normal_networks_container_is_stopped_at_the_internal_endpoint() {
        let e = trace(None, "nwcap-default", "172.29.0.20:5432");
        assert_eq!(
            hops(&e),
            [
                ("from-container", "forwarded", None),
                ("to-container", "dropped", Some("not-in-network"))
            ]
        );
        assert_eq!((e.verdict, e.reason), ("dropped", Some("not-in-network")));
        assert!(
            e.rule.starts_with("172.17.0.2 is outside nwcap-back"),
            "{}",
            e.rule
        );
        assert!(
            e.hops[0].rule.contains("observed, not enforced"),
            "{}",
            e.hops[0].rule
        );
    }

    #[test]
    fn the_route_picks_the_endpoint_of_a_multi_homed_container() {
        let e = trace(None, "nwcap-app", "203.0.113.7:443");
        assert_eq!(e.src, Some("172.18.0.2".parse().unwrap()));
        assert_eq!(hops(&e), [("from-container", "forwarded", None)]);
        assert_eq!(e.hops[0].network.as_deref(), Some("nwcap-front"));
    }

    #[test]
    fn an_internal_only_container_has_no_route_out() {
        let e = trace(None, "nwcap-static", "203.0.113.7:443");
        assert_eq!((e.verdict, e.reason, e.src), ("unroutable", None, None));
        assert_eq!(e.rule, "nwcap-static has no route to 203.0.113.7");
        assert!(e.hops.is_empty());
        assert_eq!(e.kernel_agrees, None);
        assert_eq!(
            render_table(&e),
            "nwcap-static -> 203.0.113.7:443/tcp: unroutable\n  nwcap-static has no route to 203.0.113.7\n"
        );
    }

    #[test]
    fn from_outside_the_uplink_shield_decides_first() {
        let e = trace(Some("nwx1a"), "203.0.113.7", "nwcap-static:5432");
        assert_eq!(e.source, "203.0.113.7");
        assert_eq!(
            hops(&e),
            [
                ("uplink", "dropped", Some("protected-prefix")),
                ("to-container", "dropped", Some("not-in-network"))
            ]
        );
        assert_eq!((e.verdict, e.reason), ("dropped", Some("protected-prefix")));
        assert_eq!(
            e.rule,
            "172.29.0.20 is inside protected prefix 172.29.0.0/24 of internal network nwcap-back: the uplink shield drops it"
        );
        assert_eq!(e.hops[0].interface.as_deref(), Some("nwx1a"));
        assert_eq!(e.hops[0].network.as_deref(), Some("nwcap-back"));
        // An observed network is not protected: the shield passes.
        let e = trace(Some("nwx1a"), "203.0.113.7", "nwcap-default");
        assert_eq!(
            hops(&e),
            [
                ("uplink", "forwarded", None),
                ("to-container", "forwarded", None)
            ]
        );
        assert_eq!(e.proto, "icmp");
    }

    #[test]
    fn without_an_uplink_shield_the_hop_is_skipped_and_the_endpoint_decides() {
        let e = trace(None, "203.0.113.7", "nwcap-static:5432");
        assert_eq!(
            hops(&e),
            [
                ("uplink", "skipped", None),
                ("to-container", "dropped", Some("not-in-network"))
            ]
        );
        assert!(
            e.hops[0].rule.contains("no uplink shield is attached"),
            "{}",
            e.hops[0].rule
        );
        assert!(
            e.rule
                .contains("nothing from outside the network reaches its endpoints"),
            "{}",
            e.rule
        );
    }

    #[test]
    fn the_host_sends_from_the_gateway_and_cannot_open_connections_in() {
        let e = trace(None, "host", "nwcap-static:5432");
        assert_eq!(
            (e.source.as_str(), e.src),
            ("host", Some("172.29.0.1".parse().unwrap()))
        );
        assert_eq!(hops(&e), [("to-container", "dropped", Some("host-access"))]);
        assert_eq!(
            e.rule,
            "the host (gateway 172.29.0.1) cannot open connections into nwcap-back; netwatch.gateway=allow on the network would open it"
        );
        let e = trace(None, "10.99.0.1", "nwcap-static:5432");
        assert_eq!((e.source.as_str(), e.reason), ("host", Some("host-access")));
    }

    #[test]
    fn a_dns_alias_names_its_container_on_the_askers_network_only() {
        // nwcap-app is `db-client` on nwcap-back, which nwcap-static shares.
        let e = trace(None, "nwcap-static", "db-client:5432");
        assert_eq!(e.dst, "172.29.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(e.hops[1].container.as_deref(), Some("nwcap-app"));
        assert_eq!(e.hops[1].interface.as_deref(), Some("vethback"));
        // As a source, too.
        let e = trace(None, "db-client", "nwcap-static:5432");
        assert_eq!(e.source, "nwcap-app");
        // Docker's resolver answers an alias on its own network only.
        let why = error(None, "nwcap-default", "db-client:5432");
        assert!(
            why.contains("DNS alias on nwcap-back, which nwcap-default is not on"),
            "{why}"
        );
    }

    #[test]
    fn the_embedded_resolver_answers_inside_the_container_and_no_hook_sees_it() {
        let e = trace(None, "nwcap-app", "127.0.0.11:53/udp");
        assert_eq!((e.verdict, e.reason), ("inside-container", None));
        assert!(e.hops.is_empty());
        assert!(
            e.rule
                .contains("Docker's embedded DNS resolver inside nwcap-app's own network")
                && e.rule.contains("UPSTREAM:53/udp"),
            "{}",
            e.rule
        );
        let why = error(None, "host", "127.0.0.11:53/udp");
        assert!(why.contains("give a container as the source"), "{why}");
    }

    #[test]
    fn an_address_of_a_container_stands_for_that_container() {
        let e = trace(None, "172.29.0.20", "nwcap-app");
        assert_eq!(e.source, "nwcap-static");
        assert_eq!(e.dst, "172.29.0.10".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_sources_pick_ipv6_destinations() {
        let e = trace(Some("nwx1a"), "2001:db8::7", "nwcap-static:443");
        assert_eq!(e.dst, "fd00:29::3".parse::<IpAddr>().unwrap());
        assert_eq!(e.reason, Some("protected-prefix"));
        assert!(
            render_table(&e)
                .starts_with("2001:db8::7 -> [fd00:29::3]:443/tcp: dropped (protected-prefix)\n")
        );
    }

    #[test]
    fn errors_say_what_to_give_instead() {
        let e = error(None, "203.0.113.7", "198.51.100.1");
        assert!(
            e.contains("198.51.100.1 is not on any Docker network of this host"),
            "{e}"
        );
        let e = error(None, "host", "172.29.0.99:80");
        assert!(
            e.contains("inside network nwcap-back but no running container has it"),
            "{e}"
        );
        let e = error(None, "203.0.113.7", "fd00:29::3");
        assert!(
            e.contains("the source is IPv4 and the destination fd00:29::3 is IPv6"),
            "{e}"
        );
        let e = error(None, "2001:db8::7", "nwcap-default");
        assert!(e.contains("has no IPv6 address on bridge"), "{e}");
        let e = error(None, "nosuch", "nwcap-static");
        assert!(e.contains("no running container named \"nosuch\""), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let local = |_: &Container, _| Ok(Route::Local);
        let e = format!(
            "{:#}",
            trace_with(None, "nwcap-app", "nwcap-static", local).unwrap_err()
        );
        assert!(e.contains("never leaves the container"), "{e}");
        let elsewhere = |_: &Container, _| {
            Ok(Route::Via {
                ifname: "wg0".into(),
                ifindex: 9,
                mac: None,
            })
        };
        let e = format!(
            "{:#}",
            trace_with(None, "nwcap-app", "nwcap-static", elsewhere).unwrap_err()
        );
        assert!(
            e.contains("out of wg0, which is not one of its Docker bridge endpoints"),
            "{e}"
        );
    }

    #[test]
    fn the_table_marks_hops_after_the_first_drop_and_kernel_disagreements() {
        let (snapshot, state, plan) = world();
        let topology = Topology {
            snapshot: &snapshot,
            state: &state,
            plan: &plan,
            uplink: Some("nwx1a".into()),
            pin_root: std::path::Path::new("/x"),
        };
        let from = Source::Outside("203.0.113.7".parse().unwrap());
        let path = path::trace(
            &topology,
            from,
            &parse_destination("nwcap-static:5432").unwrap(),
            docker_routes,
        )
        .unwrap();
        let kernel = [
            Some(Decision::from_reason(DropReason::ProtectedPrefix)),
            Some(Decision::FORWARD),
        ];
        let e = explanation("nwcap-static:5432", &path, &kernel);
        assert_eq!(e.kernel_agrees, Some(false));
        let table = render_table(&e);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "203.0.113.7 -> 172.29.0.20:5432/tcp: dropped (protected-prefix)"
        );
        assert!(
            lines[1]
                .starts_with("  uplink nwx1a: dropped (protected-prefix) — 172.29.0.20 is inside"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("[kernel: dropped (protected-prefix) agrees]"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("  to-container vethstatic (nwcap-static on nwcap-back): not reached, would be dropped (not-in-network) — "),
            "{table}"
        );
        assert!(
            lines[2].ends_with("[kernel: forwarded DISAGREES]"),
            "{table}"
        );
        let json = serde_json::to_value(&e).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "destination",
                "dst",
                "hops",
                "kernel_agrees",
                "port",
                "proto",
                "reason",
                "rule",
                "source",
                "src",
                "verdict"
            ]
        );
        assert_eq!(json["hops"][0]["kernel"]["agrees"], true);
        assert_eq!(json["hops"][1]["container"], "nwcap-static");
        assert_eq!(json["hops"][0]["container"], serde_json::Value::Null);
    }

    /// The captured overlay topology: nwcap-ovi alone on the internal
    /// overlay nwcap-ovl-int (sandbox veth1, 258), nwcap-ovc and the
    /// service task on nwcap-ovl (veth1 251, veth2 260), each with its
    /// route on eth0 for its overlay's subnet.
    fn overlay_trace(source: &str, destination: &str) -> Explanation {
        let inventory = crate::docker::captured::drivers::inventory(&["ovc", "ovi", "svc"]);
        let mut snapshot = Snapshot::unresolved(inventory, EndpointError::NotRoot);
        crate::docker::captured::drivers::set_sandbox_veths(&mut snapshot);
        let state = host_state(&snapshot, vec!["10.99.0.1".parse().unwrap()]);
        let plan = plan(&state);
        let topology = Topology {
            snapshot: &snapshot,
            state: &state,
            plan: &plan,
            uplink: None,
            pin_root: std::path::Path::new("/sys/fs/bpf/netwatch-unit-test"),
        };
        let eth0 = |container: &Container, _: IpAddr| -> Result<Route, EndpointError> {
            let endpoint = container.endpoints.iter().find(|e| e.driver == "overlay");
            Ok(Route::Via {
                ifname: "eth0".into(),
                ifindex: 2,
                mac: endpoint.map(|e| e.mac),
            })
        };
        let from = ends::source(&topology, source).unwrap();
        let path = path::trace(
            &topology,
            from,
            &parse_destination(destination).unwrap(),
            eth0,
        )
        .unwrap_or_else(|e| panic!("{source} -> {destination}: {e:#}"));
        explanation(destination, &path, &[])
    }

    #[test]
    fn an_overlay_containers_packets_are_judged_at_its_veth_in_the_sandbox() {
        let e = overlay_trace("nwcap-ovi", "198.18.71.1");
        assert_eq!(
            hops(&e),
            [("from-container", "dropped", Some("host-access"))]
        );
        assert_eq!(e.hops[0].interface.as_deref(), Some("veth1 (in sandbox)"));
        assert_eq!(e.hops[0].network.as_deref(), Some("nwcap-ovl-int"));
        let e = overlay_trace("nwcap-ovc", "nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv:80");
        assert_eq!(
            hops(&e),
            [
                ("from-container", "forwarded", None),
                ("to-container", "forwarded", None)
            ]
        );
        assert_eq!(e.hops[1].interface.as_deref(), Some("veth2 (in sandbox)"));
    }
}
