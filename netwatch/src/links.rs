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

use std::{io, thread, time::Duration};

use log::warn;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::sync::mpsc;

use crate::rtnetlink::{Ask, RtNetlink};

/// `RTNLGRP_LINK` (include/uapi/linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;

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
    /// An interface appeared or changed (name, master, state…).
    Changed(LinkState),
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
    use std::os::fd::AsRawFd as _;
    let tv = nix::libc::timeval {
        tv_sec: timeout.as_secs() as nix::libc::time_t,
        tv_usec: timeout.subsec_micros() as nix::libc::suseconds_t,
    };
    // SAFETY: the fd is the socket's, open for the call; the kernel reads
    // `size_of::<timeval>()` bytes from `tv`, which has them.
    let done = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<nix::libc::timeval>() as nix::libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn listen(socket: &Socket, sender: &mpsc::UnboundedSender<LinkEvent>) {
    loop {
        if sender.is_closed() {
            return;
        }
        let datagram = match socket.recv_from_full() {
            Ok((datagram, _)) => datagram,
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
        for event in parse_datagram(&datagram) {
            if sender.send(event).is_err() {
                return;
            }
        }
    }
}

/// The link notifications in one datagram; anything else (or a message
/// that does not parse: the kernel's, but never trusted to be whole) is
/// passed over.
fn parse_datagram(datagram: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
        else {
            break;
        };
        let length = message.header.length as usize;
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = &message.payload {
            events.push(LinkEvent::Changed(LinkState::from_message(link)));
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
                LinkEvent::Changed(LinkState {
                    ifindex: 7,
                    ifname: "br-1234".into(),
                    master: None,
                    kind: Some("bridge".into()),
                    lower: None,
                }),
                LinkEvent::Changed(LinkState {
                    ifindex: 9,
                    ifname: "veth0a1b2c3".into(),
                    master: Some(7),
                    kind: Some("veth".into()),
                    lower: None,
                }),
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

    #[test]
    fn the_listener_reports_an_interface_created_after_it_started() {
        // The listener and the new veth pair live in a namespace of this
        // test's own: a thread that moved there, and `ip` run through it.
        let handle = thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
            let mut events = watch().expect("listening");
            let netns = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
            let fd = {
                use std::os::fd::AsRawFd as _;
                netns.as_raw_fd()
            };
            let created = std::process::Command::new("nsenter")
                .arg(format!("--net=/proc/{}/fd/{fd}", std::process::id()))
                .args([
                    "ip", "link", "add", "nwlw0", "type", "veth", "peer", "name", "nwlw1",
                ])
                .status()
                .expect("nsenter ip link add");
            assert!(created.success());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        match events.recv().await {
                            Some(LinkEvent::Changed(link)) if link.ifname == "nwlw0" => {
                                assert_eq!(link.kind.as_deref(), Some("veth"));
                                return;
                            }
                            Some(_) => {}
                            None => panic!("the listener stopped"),
                        }
                    }
                })
                .await
                .expect("an RTM_NEWLINK for nwlw0 within 5 s");
            });
        });
        handle.join().expect("listener test thread");
    }
}
