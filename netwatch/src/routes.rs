//! Routing questions, asked of the kernel over rtnetlink in the calling
//! thread's network namespace: which interfaces hold a default route (the
//! uplinks the shield goes on) and which interface a packet to an address
//! would leave by (`ip route get`, without running `ip`).

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The ifindexes of the interfaces that hold a default route (IPv4 or IPv6)
/// in the main table, sorted and without duplicates. Multipath default
/// routes count every next hop's interface.
///
/// # Errors
/// The netlink socket cannot be opened or the kernel refuses the dump.
pub fn default_route_interfaces() -> io::Result<Vec<u32>> {
    let mut ifindexes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        for route in request_routes(request, NLM_F_REQUEST | NLM_F_DUMP)? {
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

/// The interface a packet to `dst` would leave by (`RTM_GETROUTE` for one
/// address), or `None` when there is no route (ENETUNREACH, EHOSTUNREACH).
///
/// # Errors
/// The netlink socket cannot be opened or the kernel refuses the request for
/// another reason.
pub fn output_interface(dst: IpAddr) -> io::Result<Option<u32>> {
    let mut request = RouteMessage::default();
    let (family, address, len) = match dst {
        IpAddr::V4(v4) => (AddressFamily::Inet, RouteAddress::Inet(v4), 32),
        IpAddr::V6(v6) => (AddressFamily::Inet6, RouteAddress::Inet6(v6), 128),
    };
    request.header.address_family = family;
    request.header.destination_prefix_length = len;
    request
        .attributes
        .push(RouteAttribute::Destination(address));
    let routes = match request_routes(request, NLM_F_REQUEST) {
        Ok(routes) => routes,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENETUNREACH | nix::libc::EHOSTUNREACH)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(routes.iter().find_map(|route| {
        route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(ifindex) => Some(*ifindex),
            _ => None,
        })
    }))
}

/// Sends one route request and collects the replies (one for a lookup,
/// many for a dump).
fn request_routes(message: RouteMessage, flags: u16) -> io::Result<Vec<RouteMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(message)),
    );
    packet.header.flags = flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let dump = flags & NLM_F_DUMP != 0;
    let mut routes = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < datagram.len() {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&datagram[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(routes),
                NetlinkPayload::Error(error) if error.code.is_some() => {
                    return Err(error.to_io());
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    routes.push(route);
                    if !dump {
                        return Ok(routes);
                    }
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_leave_by_loopback() {
        assert_eq!(
            output_interface("127.0.0.1".parse().unwrap()).unwrap(),
            Some(1)
        );
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
