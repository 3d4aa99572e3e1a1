//! Interfaces as the kernel announces them: a listener on rtnetlink's link
//! group, and the same view of the interfaces that exist now.
//!
//! Why the agent listens: Docker creates a container's veth pair and
//! enslaves the host end to the network's bridge before it starts the
//! container's process, so `RTM_NEWLINK` with `IFLA_MASTER` set arrives
//! before the container can send anything; Docker's `start` event arrives
//! after (measured: 14.6 ms median after the container's first packet).
//! At boot, dockerd creates its bridges (`br-<network id>`, same names as
//! before the reboot) before it restores containers, and long before its
//! API answers.
//!
//! The listener subscribes before the caller lists what exists, so an
//! interface that appears in between is reported at least once (twice is
//! harmless: every consumer is idempotent).
//!
//! It also hears other namespaces (`NETLINK_LISTEN_ALL_NSID`): an overlay
//! network's sandbox veth is moved into the sandbox and enslaved to its
//! `br0` there, 206–296 ms before the container's first packet (measured,
//! docs/drivers.md), and nothing in the host namespace says so. The kernel
//! delivers another namespace's events only if the host has an id (nsid)
//! for it, tagged with that id; moving a device from the host into a
//! namespace gives the host one (`RTM_DELLINK` carries `IFLA_NEW_NETNSID`),
//! and every sandbox veth is created in the host first. An nsid names a
//! namespace only in the host's view: [`crate::host::rtnetlink::RtNetlink::nsid`]
//! maps a namespace file to it.

use std::{
    io::{self, IoSliceMut},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

use log::warn;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::sync::mpsc;

use crate::host::rtnetlink::{Ask, RtNetlink};

/// `RTNLGRP_LINK` (include/uapi/linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
/// `SOL_NETLINK` and its option `NETLINK_LISTEN_ALL_NSID`
/// (include/uapi/linux/netlink.h, Linux ≥ 4.6), which is also the type of
/// the control message carrying an event's nsid.
const SOL_NETLINK: i32 = 270;
const NETLINK_LISTEN_ALL_NSID: i32 = 8;
/// Room for one datagram: the kernel's link notifications are built in
/// buffers of at most a few pages.
const DATAGRAM_ROOM: usize = 64 << 10;

/// An interface as `RTM_NEWLINK` (or a dump) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub ifindex: u32,
    pub ifname: String,
    /// `IFLA_MASTER`: the bridge (or bond…) this interface is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_INFO_KIND`: `veth`, `bridge`, `macvlan`, …
    pub kind: Option<String>,
    /// `IFLA_LINK` of an interface whose lower device is in the same
    /// namespace (no `IFLA_LINK_NETNSID`): a macvlan child's parent, a veth's
    /// peer.
    pub lower: Option<u32>,
}

impl LinkState {
    fn from_message(message: &LinkMessage) -> LinkState {
        let mut link = LinkState {
            ifindex: message.header.index,
            ifname: String::new(),
            master: None,
            kind: None,
            lower: None,
        };
        let mut lower_elsewhere = false;
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.ifname.clone_from(name),
                LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
                LinkAttribute::Link(lower) if *lower != 0 => link.lower = Some(*lower),
                LinkAttribute::LinkNetNsId(_) => lower_elsewhere = true,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind_name(kind));
                        }
                    }
                }
                _ => {}
            }
        }
        if lower_elsewhere {
            // The number is another namespace's.
            link.lower = None;
        }
        link
    }
}

/// `IFLA_INFO_KIND` as `ip link` names it.
pub(crate) fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".to_owned(),
        InfoKind::Bridge => "bridge".to_owned(),
        InfoKind::MacVlan => "macvlan".to_owned(),
        InfoKind::IpVlan => "ipvlan".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// What the listener reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface of the listener's own namespace appeared or changed
    /// (name, master, state…).
    Changed(LinkState),
    /// An interface of another namespace, which the listener's namespace
    /// knows as `nsid`, appeared or changed. Its ifindexes (its own,
    /// `master`, `lower`) are that namespace's.
    ChangedIn { nsid: i32, link: LinkState },
    /// The kernel dropped notifications (the socket's buffer overflowed):
    /// whatever changed meanwhile must be found by listing interfaces.
    Overrun,
}

/// Every interface of the calling thread's network namespace, now.
///
/// # Errors
/// The kernel refuses the socket or the dump.
pub fn links_now() -> io::Result<Vec<LinkState>> {
    let netlink = RtNetlink::open()?;
    Ok(netlink
        .links(LinkMessage::default(), Ask::Dump)?
        .iter()
        .map(LinkState::from_message)
        .collect())
}

/// The interface of the calling thread's network namespace with number
/// `ifindex`, if there is one.
///
/// # Errors
/// The kernel refuses the socket or the request (other than "no such
/// interface").
pub fn link_by_index(ifindex: u32) -> io::Result<Option<LinkState>> {
    let netlink = RtNetlink::open()?;
    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    match netlink.links(request, Ask::One) {
        Ok(found) => Ok(found.first().map(LinkState::from_message)),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts listening for link changes in the calling thread's network
/// namespace; events arrive on the returned channel, from a thread of
/// their own (a blocking socket, so that a busy agent loop never makes the
/// kernel drop notifications: the channel queues them). The thread ends
/// when the receiver is dropped.
///
/// # Errors
/// The kernel refuses the socket or the group membership.
pub fn watch() -> io::Result<mpsc::UnboundedReceiver<LinkEvent>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, 0))?;
    socket.add_membership(RTNLGRP_LINK)?;
    set_socket_option(&socket, SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)?;
    // Room for a burst (a dockerd restoring hundreds of containers); an
    // overflow is still noticed (ENOBUFS) and reported as an Overrun.
    let _ = socket.set_rx_buf_sz(4 << 20);
    // Wake up now and then to notice a dropped receiver.
    set_receive_timeout(&socket, Duration::from_secs(1))?;
    let (sender, receiver) = mpsc::unbounded_channel();
    // Subscribed already: what changes from here on is queued in the
    // socket until the thread reads it.
    thread::Builder::new()
        .name("netwatch-links".into())
        .spawn(move || listen(&socket, &sender))?;
    Ok(receiver)
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = nix::libc::timeval {
        tv_sec: timeout.as_secs() as nix::libc::time_t,
        tv_usec: timeout.subsec_micros() as nix::libc::suseconds_t,
    };
    set_raw_option(socket, nix::libc::SOL_SOCKET, nix::libc::SO_RCVTIMEO, &tv)
}

fn set_socket_option(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    set_raw_option(socket, level, name, &value)
}

fn set_raw_option<T>(socket: &Socket, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: the fd is the socket's, open for the call; the kernel reads
    // `size_of::<T>()` bytes from `value`, which has them.
    let done = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as nix::libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram received, and the nsid its control message names (none:
/// the listener's own namespace).
struct Received {
    length: usize,
    nsid: Option<i32>,
    truncated: bool,
}

fn receive(socket: &Socket, buffer: &mut [u8]) -> io::Result<Received> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut control = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let nsid = message.cmsgs().ok().and_then(|mut all| {
        all.find_map(|cmsg| match cmsg {
            ControlMessageOwned::Unknown(unknown)
                if unknown.cmsg_header.cmsg_level == SOL_NETLINK
                    && unknown.cmsg_header.cmsg_type == NETLINK_LISTEN_ALL_NSID =>
            {
                let bytes: [u8; 4] = unknown.data_bytes.get(..4)?.try_into().ok()?;
                Some(i32::from_ne_bytes(bytes))
            }
            _ => None,
        })
    });
    Ok(Received {
        length: message.bytes,
        nsid,
        truncated: message.flags.contains(MsgFlags::MSG_TRUNC),
    })
}

fn listen(socket: &Socket, sender: &mpsc::UnboundedSender<LinkEvent>) {
    let mut buffer = vec![0u8; DATAGRAM_ROOM];
    loop {
        if sender.is_closed() {
            return;
        }
        let received = match receive(socket, &mut buffer) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                if sender.send(LinkEvent::Overrun).is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                // The agent learns nothing new without this socket, but it
                // still reconciles on Docker's events: say so once.
                warn!(
                    "link listener stopped ({e}); new interfaces are attached on Docker's events \
                     only"
                );
                return;
            }
        };
        if received.truncated {
            // Part of a notification is lost: as good as dropped.
            if sender.send(LinkEvent::Overrun).is_err() {
                return;
            }
            continue;
        }
        for link in parse_datagram(&buffer[..received.length]) {
            let event = match received.nsid {
                Some(nsid) => LinkEvent::ChangedIn { nsid, link },
                None => LinkEvent::Changed(link),
            };
            if sender.send(event).is_err() {
                return;
            }
        }
    }
}

/// The link notifications in one datagram; anything else (or a message
/// that does not parse: the kernel's, but never trusted to be whole) is
/// passed over.
fn parse_datagram(datagram: &[u8]) -> Vec<LinkState> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
        else {
            break;
        };
        let length = message.header.length as usize;
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = &message.payload {
            events.push(LinkState::from_message(link));
        }
        if length == 0 {
            break;
        }
        offset += length;
    }
    events
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NetlinkHeader;

    use super::*;

    fn new_link(ifindex: u32, name: &str, master: Option<u32>, kind: InfoKind) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(master) = master {
            link.attributes.push(LinkAttribute::Controller(master));
        }
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    #[test]
    fn a_veth_enslaved_to_a_bridge_is_reported_with_its_master() {
        let mut datagram = new_link(7, "br-1234", None, InfoKind::Bridge);
        datagram.extend(new_link(9, "veth0a1b2c3", Some(7), InfoKind::Veth));
        assert_eq!(
            parse_datagram(&datagram),
            vec![
                LinkState {
                    ifindex: 7,
                    ifname: "br-1234".into(),
                    master: None,
                    kind: Some("bridge".into()),
                    lower: None,
                },
                LinkState {
                    ifindex: 9,
                    ifname: "veth0a1b2c3".into(),
                    master: Some(7),
                    kind: Some("veth".into()),
                    lower: None,
                },
            ]
        );
    }

    #[test]
    fn a_macvlan_child_names_its_parent_unless_the_parent_is_another_namespaces() {
        let with = |attributes: Vec<LinkAttribute>| {
            let mut link = LinkMessage::default();
            link.header.index = 61;
            link.attributes = attributes;
            link.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::MacVlan,
                )]));
            LinkState::from_message(&link)
        };
        let here = with(vec![LinkAttribute::Link(60)]);
        assert_eq!(
            (here.kind.as_deref(), here.lower),
            (Some("macvlan"), Some(60))
        );
        let elsewhere = with(vec![LinkAttribute::Link(60), LinkAttribute::LinkNetNsId(3)]);
        assert_eq!(elsewhere.lower, None, "60 is another namespace's number");
    }

    #[test]
    fn a_truncated_datagram_yields_what_parsed_and_no_panic() {
        let mut datagram = new_link(7, "br-1234", None, InfoKind::Bridge);
        let whole = datagram.len();
        datagram.extend(new_link(9, "veth0a1b2c3", Some(7), InfoKind::Veth));
        for cut in [0, 3, whole - 1, whole + 5, datagram.len() - 1] {
            let events = parse_datagram(&datagram[..cut]);
            assert!(events.len() <= 1, "cut at {cut}: {events:?}");
        }
    }
}
