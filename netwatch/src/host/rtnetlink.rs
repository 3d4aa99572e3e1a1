//! A blocking `NETLINK_ROUTE` socket in the network namespace of the thread
//! that opened it, and the one request/reply exchange netwatch has with
//! rtnetlink (interfaces for [`crate::host::interfaces`], routes for
//! [`crate::host::routes`]).
//!
//! A netlink socket belongs to the namespace it was created in for its whole
//! life, whatever namespace the thread moves to afterwards: open it after
//! `setns` to ask a container's kernel tables, before (or in another thread)
//! to ask the host's.
//!
//! The kernel's refusals come back as [`io::Error`]s carrying its errno
//! ([`io::Error::raw_os_error`]), so callers can tell `ENODEV` (no such
//! interface) or `ENETUNREACH` (no route) from a real failure.

use std::{cell::Cell, io};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::LinkMessage,
    nsid::{NsidAttribute, NsidMessage},
    route::RouteMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How many objects a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Every object of the kind (`NLM_F_DUMP`): the replies run until
    /// `NLMSG_DONE`.
    Dump,
    /// The one object the request names (an ifindex, a destination): the
    /// first reply is the answer.
    One,
    /// A change the kernel answers with an acknowledgement only.
    Ack,
}

/// A blocking `NETLINK_ROUTE` socket, bound to the kernel of the namespace
/// of the thread that opened it.
pub struct RtNetlink {
    socket: Socket,
    /// The last request's sequence number: replies echo it, so a reply left
    /// over from an earlier request on this socket is never taken for the
    /// current one's.
    sequence: Cell<u32>,
}

impl RtNetlink {
    /// Opens a socket in the calling thread's current network namespace.
    ///
    /// # Errors
    /// The kernel refuses the socket, the bind or the connect.
    pub fn open() -> io::Result<RtNetlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(RtNetlink {
            socket,
            sequence: Cell::new(0),
        })
    }

    /// The cookie of the network namespace this socket belongs to
    /// (`SO_NETNS_COOKIE`, Linux ≥ 5.14): what `bpf_get_netns_cookie`
    /// answers for sockets of that namespace.
    ///
    /// # Errors
    /// The kernel refuses the option (older than 5.14).
    pub fn netns_cookie(&self) -> io::Result<u64> {
        use std::os::fd::AsRawFd as _;
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
        // SAFETY: the fd is this socket's, open for the call; the kernel
        // writes at most `len` bytes into `cookie`, which has them.
        let done = unsafe {
            nix::libc::getsockopt(
                self.socket.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cookie)
    }

    /// `RTM_GETLINK`: the interfaces the kernel answers with.
    ///
    /// # Errors
    /// As [`RtNetlink::request`]; `ENODEV` when [`Ask::One`] names no
    /// interface.
    pub fn links(&self, request: LinkMessage, ask: Ask) -> io::Result<Vec<LinkMessage>> {
        self.request(
            RouteNetlinkMessage::GetLink(request),
            ask,
            |reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            },
        )
    }

    /// The id this socket's namespace has for the namespace `other` (a
    /// namespace file, `/proc/<pid>/ns/net` or a bind mount of one), given
    /// one if it has none: the nsid its link notifications to listeners
    /// of all namespaces carry ([`crate::host::links`]).
    ///
    /// # Errors
    /// `other` is no namespace file, or the kernel refuses the request.
    pub fn nsid(&self, other: &std::fs::File) -> io::Result<i32> {
        use std::os::fd::AsRawFd as _;
        let fd = u32::try_from(other.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(nix::libc::EBADF))?;
        let ask = || {
            let mut request = NsidMessage::default();
            request.attributes.push(NsidAttribute::Fd(fd));
            self.request(
                RouteNetlinkMessage::GetNsId(request),
                Ask::One,
                |reply| match reply {
                    RouteNetlinkMessage::NewNsId(answer) => {
                        answer.attributes.iter().find_map(|a| match a {
                            NsidAttribute::Id(id) => Some(*id),
                            _ => None,
                        })
                    }
                    _ => None,
                },
            )
        };
        // NETNSA_NSID_NOT_ASSIGNED
        const NOT_ASSIGNED: i32 = -1;
        match ask()?.first() {
            Some(&id) if id != NOT_ASSIGNED => return Ok(id),
            Some(_) => {}
            None => return Err(io::Error::from(io::ErrorKind::InvalidData)),
        }
        let mut assign = NsidMessage::default();
        assign.attributes.push(NsidAttribute::Fd(fd));
        assign.attributes.push(NsidAttribute::Id(NOT_ASSIGNED));
        match self.request(
            RouteNetlinkMessage::NewNsId(assign),
            Ask::Ack,
            |_| None::<()>,
        ) {
            // Assigned meanwhile, by us or by the kernel for a move.
            Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => {}
            other => {
                other?;
            }
        }
        match ask()?.first() {
            Some(&id) if id != NOT_ASSIGNED => Ok(id),
            _ => Err(io::Error::from(io::ErrorKind::InvalidData)),
        }
    }

    /// `RTM_GETROUTE`: the routes the kernel answers with (a table dump, or
    /// the route one destination takes).
    ///
    /// # Errors
    /// As [`RtNetlink::request`]; a lookup with no way out is refused with
    /// `ENETUNREACH`, `EHOSTUNREACH`, `EACCES` or `EINVAL`.
    pub fn routes(&self, request: RouteMessage, ask: Ask) -> io::Result<Vec<RouteMessage>> {
        self.request(
            RouteNetlinkMessage::GetRoute(request),
            ask,
            |reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Some(route),
                _ => None,
            },
        )
    }

    /// Sends `message` and collects the kernel's replies that `keep` turns
    /// into a `T` (the others, say a link in answer to a route request, are
    /// passed over): all of them up to `NLMSG_DONE` for [`Ask::Dump`], the
    /// first for [`Ask::One`].
    ///
    /// # Errors
    /// The socket fails, a reply does not parse (`InvalidData`), or the
    /// kernel answers with an error: then the error carries its errno.
    pub fn request<T>(
        &self,
        message: RouteNetlinkMessage,
        ask: Ask,
        mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let sequence = self.sequence.get().wrapping_add(1);
        self.sequence.set(sequence);
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = match ask {
            Ask::Dump => NLM_F_REQUEST | NLM_F_DUMP,
            Ask::One => NLM_F_REQUEST,
            Ask::Ack => NLM_F_REQUEST | NLM_F_ACK,
        };
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&datagram[offset..])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = reply.header.length as usize;
                if reply.header.sequence_number == sequence {
                    match reply.payload {
                        // A dump that fails part way ends with the errno in
                        // NLMSG_DONE instead of an NLMSG_ERROR.
                        NetlinkPayload::Done(done) if done.code != 0 => {
                            return Err(io::Error::from_raw_os_error(done.code.abs()));
                        }
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(error) if error.code.is_some() => {
                            return Err(error.to_io());
                        }
                        NetlinkPayload::Error(_) if ask == Ask::Ack => return Ok(replies),
                        NetlinkPayload::InnerMessage(inner) => {
                            if let Some(kept) = keep(inner) {
                                replies.push(kept);
                                if ask == Ask::One {
                                    return Ok(replies);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_has_loopback_at_ifindex_1() {
        let netlink = RtNetlink::open().unwrap();
        let links = netlink.links(LinkMessage::default(), Ask::Dump).unwrap();
        assert!(links.iter().any(|link| link.header.index == 1), "{links:?}");
        // The same socket answers a second request.
        let mut request = LinkMessage::default();
        request.header.index = 1;
        let links = netlink.links(request, Ask::One).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].header.index, 1);
    }

    #[test]
    fn kernel_refusals_keep_their_errno() {
        let netlink = RtNetlink::open().unwrap();
        let mut request = LinkMessage::default();
        // Ifindexes are allocated upwards from 1; this one is never reached.
        request.header.index = i32::MAX as u32;
        let error = netlink.links(request, Ask::One).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENODEV), "{error}");
        // The socket is still usable after a refusal.
        assert!(
            !netlink
                .links(LinkMessage::default(), Ask::Dump)
                .unwrap()
                .is_empty()
        );
    }
}
