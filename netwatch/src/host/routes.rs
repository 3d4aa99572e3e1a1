//! Routing questions, asked of the kernel over rtnetlink: which interfaces
//! hold a default route in the calling thread's network namespace (the
//! uplinks the shield goes on) and where a namespace's routing sends a
//! packet for an address (`ip route get`, without running `ip`).

use std::{io, net::IpAddr};

use netlink_packet_route::{
    AddressFamily,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};

use crate::host::rtnetlink::{Ask, RtNetlink};

/// The ifindexes of the interfaces that hold a default route (IPv4 or IPv6)
/// in the main table, sorted and without duplicates. Multipath default
/// routes count every next hop's interface.
///
/// # Errors
/// The netlink socket cannot be opened or the kernel refuses the dump.
pub fn default_route_interfaces() -> io::Result<Vec<u32>> {
    let netlink = RtNetlink::open()?;
    let mut ifindexes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        for route in netlink.routes(request, Ask::Dump)? {
            let header = &route.header;
            if header.destination_prefix_length != 0
                || header.table != RouteHeader::RT_TABLE_MAIN
                || header.kind != RouteType::Unicast
            {
                continue;
            }
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Oif(ifindex) => ifindexes.push(*ifindex),
                    RouteAttribute::MultiPath(hops) => {
                        ifindexes.extend(hops.iter().map(|hop| hop.interface_index));
                    }
                    _ => {}
                }
            }
        }
    }
    ifindexes.sort_unstable();
    ifindexes.dedup();
    Ok(ifindexes)
}

/// Where a namespace's routing sends a packet for one destination: the
/// kernel's answer to `RTM_GETROUTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAnswer {
    /// Out through the interface with this ifindex.
    Out(u32),
    /// The destination is an address of the namespace itself.
    Local,
    /// No route takes the packet anywhere.
    Refused(Unroutable),
}

/// Why a lookup found no way out, told apart by the kernel's error
/// (`ENETUNREACH`, `EHOSTUNREACH`, `EACCES`, `EINVAL`), checked on Linux
/// 6.18 for IPv4 and IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// No route covers the destination (or a `throw` route does).
    NoRoute,
    /// An `unreachable` route covers it.
    Unreachable,
    /// A `prohibit` route covers it.
    Prohibited,
    /// A `blackhole` route covers it.
    Blackhole,
}

impl Unroutable {
    fn from_errno(errno: i32) -> Option<Unroutable> {
        match errno {
            nix::libc::ENETUNREACH => Some(Unroutable::NoRoute),
            nix::libc::EHOSTUNREACH => Some(Unroutable::Unreachable),
            nix::libc::EACCES => Some(Unroutable::Prohibited),
            nix::libc::EINVAL => Some(Unroutable::Blackhole),
            _ => None,
        }
    }
}

/// `RTM_GETROUTE` for one address: the route an outgoing packet to `dst`
/// takes in the namespace `netlink` was opened in. The kernel's refusals
/// that mean "no way out" are answers ([`RouteAnswer::Refused`]), not
/// errors.
///
/// # Errors
/// The socket fails or the kernel refuses the request for another reason.
pub fn route_get(netlink: &RtNetlink, dst: IpAddr) -> io::Result<RouteAnswer> {
    let (family, prefix_length) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    let mut request = RouteMessage::default();
    request.header.address_family = family;
    request.header.destination_prefix_length = prefix_length;
    request
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    match netlink.routes(request, Ask::One) {
        Ok(routes) => Ok(routes
            .first()
            .map_or(RouteAnswer::Refused(Unroutable::NoRoute), route_answer)),
        Err(e) => match e.raw_os_error().and_then(Unroutable::from_errno) {
            Some(why) => Ok(RouteAnswer::Refused(why)),
            None => Err(e),
        },
    }
}

fn route_answer(route: &RouteMessage) -> RouteAnswer {
    match route.header.kind {
        RouteType::Local => return RouteAnswer::Local,
        RouteType::Unreachable => return RouteAnswer::Refused(Unroutable::Unreachable),
        RouteType::Prohibit => return RouteAnswer::Refused(Unroutable::Prohibited),
        RouteType::BlackHole => return RouteAnswer::Refused(Unroutable::Blackhole),
        RouteType::Throw => return RouteAnswer::Refused(Unroutable::NoRoute),
        _ => {}
    }
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Oif(ifindex) => Some(RouteAnswer::Out(*ifindex)),
            _ => None,
        })
        .unwrap_or(RouteAnswer::Refused(Unroutable::NoRoute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_local() {
        let netlink = RtNetlink::open().unwrap();
        for dst in ["127.0.0.1", "127.0.0.2"] {
            assert_eq!(
                route_get(&netlink, dst.parse().unwrap()).unwrap(),
                RouteAnswer::Local,
                "{dst}"
            );
        }
    }

    #[test]
    fn looking_up_any_address_answers() {
        // TEST-NET-1 and -3: routed by a default route if there is one,
        // refused if not; never an error.
        let netlink = RtNetlink::open().unwrap();
        for dst in ["192.0.2.1", "203.0.113.7"] {
            let answer = route_get(&netlink, dst.parse().unwrap()).unwrap();
            if let RouteAnswer::Out(ifindex) = answer {
                assert!(
                    nix::net::if_::if_indextoname(ifindex).is_ok(),
                    "{dst}: ifindex {ifindex} does not exist"
                );
            }
        }
    }

    #[test]
    fn route_types_that_refuse_are_unroutable() {
        let mut route = RouteMessage::default();
        route.header.kind = RouteType::Unicast;
        route.attributes.push(RouteAttribute::Oif(7));
        assert_eq!(route_answer(&route), RouteAnswer::Out(7));
        route.header.kind = RouteType::Local;
        assert_eq!(route_answer(&route), RouteAnswer::Local);
        route.header.kind = RouteType::BlackHole;
        assert_eq!(
            route_answer(&route),
            RouteAnswer::Refused(Unroutable::Blackhole)
        );
        let mut without_interface = RouteMessage::default();
        without_interface.header.kind = RouteType::Unicast;
        assert_eq!(
            route_answer(&without_interface),
            RouteAnswer::Refused(Unroutable::NoRoute)
        );
        assert_eq!(
            Unroutable::from_errno(nix::libc::ENETUNREACH),
            Some(Unroutable::NoRoute)
        );
        assert_eq!(Unroutable::from_errno(nix::libc::EPERM), None);
    }

    #[test]
    fn default_route_interfaces_are_real_interfaces() {
        for ifindex in default_route_interfaces().unwrap() {
            assert!(
                nix::net::if_::if_indextoname(ifindex).is_ok(),
                "ifindex {ifindex} does not exist"
            );
        }
    }
}
