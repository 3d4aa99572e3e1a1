//! Raw Ethernet frames in and out of one interface (AF_PACKET), for tests
//! that send what no socket API would build (malformed, spoofed) and watch
//! what arrives at the other end.
//!
//! A socket belongs to the network namespace it was created in: create it
//! inside [`crate::reach::Netns::run`] and use it from any thread.
//!
//! What a socket receives is what was sent, VLAN tags included: the
//! receive path of every interface moves a frame's outer 802.1Q or 802.1ad
//! tag into skb metadata before the packet taps see it (`skb_vlan_untag`
//! in `__netif_receive_skb_core`), so a raw socket reads the frame without
//! it and gets the tag in a `PACKET_AUXDATA` message; [`PacketSocket`]
//! puts it back where it was.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::reach::{Listeners, Netns};

/// An AF_PACKET socket bound to one interface, receiving every protocol.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    /// Sends with a `virtio_net_hdr` in front (see
    /// [`PacketSocket::headers_in_fragments`]).
    vnet_header: bool,
}

const ETH_P_ALL: u16 = 0x0003;

impl PacketSocket {
    /// Binds to `ifname` in the calling thread's network namespace.
    pub fn bind(ifname: &str) -> io::Result<PacketSocket> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let address = link_address(ifindex);
        // SAFETY: `address` is a valid sockaddr_ll of the size passed.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = PacketSocket {
            fd,
            ifindex,
            vnet_header: false,
        };
        socket.set_option(libc::PACKET_AUXDATA, 1)?;
        Ok(socket)
    }

    /// A socket on `ifname` (in the calling thread's namespace) that only
    /// sends: bound to no protocol, it receives nothing, not even the copy
    /// of each frame it sends that a receiving socket takes (a copy a
    /// socket cannot queue is freed as a drop, which the kernel drop
    /// program sees with the Ethernet header where it reads an IP header).
    pub fn sender(ifname: &str) -> io::Result<PacketSocket> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        // SAFETY: plain socket(2) with protocol 0 (no packet is received);
        // the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket {
            // SAFETY: `raw` is a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            ifindex,
            vnet_header: false,
        })
    }

    fn set_option(&self, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: the fd is ours; the option value is a valid c_int of the
        // size passed.
        let done = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends from now on with `PACKET_QDISC_BYPASS`: straight to the
    /// driver, past the interface's qdisc and its TC/TCX egress hook (only
    /// CAP_NET_RAW is needed, which Docker gives containers by default).
    pub fn bypass_qdisc(&self) -> io::Result<()> {
        self.set_option(libc::PACKET_QDISC_BYPASS, 1)
    }

    /// Sends from now on so that everything past the Ethernet header of a
    /// frame of a page or more lies in the skb's page fragments, not in
    /// its linear data: as GRO aggregates and some drivers hand packets
    /// to the stack, and as BPF_PROG_TEST_RUN never can. How (af_packet,
    /// Linux 6.18): with `PACKET_VNET_HDR` each frame carries a
    /// `virtio_net_hdr` whose `hdr_len` (here 14) sets the linear part
    /// (`packet_snd`), and `packet_alloc_skb` makes the rest paged when
    /// the frame and headroom reach `PAGE_SIZE`; shorter frames stay
    /// linear. A frame longer than the interface's MTU is refused.
    pub fn headers_in_fragments(mut self) -> io::Result<PacketSocket> {
        self.set_option(libc::PACKET_VNET_HDR, 1)?;
        self.vnet_header = true;
        Ok(self)
    }

    /// Sends one frame as it is (the kernel adds nothing).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        if self.vnet_header {
            // struct virtio_net_hdr, little-endian: no checksum offload, no
            // GSO, hdr_len 14, the rest zero.
            let mut with_header = vec![0u8; 10];
            with_header[2..4].copy_from_slice(&14u16.to_le_bytes());
            with_header.extend_from_slice(frame);
            return self.send_raw(&with_header).map(|n| n.saturating_sub(10));
        }
        self.send_raw(frame)
    }

    fn send_raw(&self, frame: &[u8]) -> io::Result<usize> {
        let address = link_address(self.ifindex);
        // SAFETY: the buffer and the address are valid for the sizes given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// Every frame that comes in on the interface until `until` (frames the
    /// interface sends are left out), each with its VLAN tag put back.
    pub fn received_until(&self, until: Instant) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_until(until) {
            frames.push(frame);
        }
        frames
    }

    /// Every incoming frame already queued on the socket, without waiting
    /// (frames the interface sends are left out), each with its VLAN tag
    /// put back.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut buffer = vec![0u8; 65536];
        let mut frames = Vec::new();
        while let Some((outgoing, frame)) = self.receive(&mut buffer) {
            if !outgoing {
                frames.push(frame);
            }
        }
        frames
    }

    /// The next frame that comes in on the interface before `until`, with
    /// its VLAN tag put back; `None` once `until` has passed.
    pub fn next_until(&self, until: Instant) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; 65536];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut poll = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&self.fd),
                nix::poll::PollFlags::POLLIN,
            )];
            let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut poll, millis) {
                Ok(0) | Err(_) => continue,
                Ok(_) => {}
            }
            if let Some((outgoing, frame)) = self.receive(&mut buffer)
                && !outgoing
            {
                return Some(frame);
            }
        }
    }

    /// One frame from the socket's queue (`None` if there is none) and
    /// whether the interface sent it.
    fn receive(&self, buffer: &mut [u8]) -> Option<(bool, Vec<u8>)> {
        // SAFETY: sockaddr_ll is plain data; recvmsg fills it.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        // u64 words: the control buffer must be aligned for cmsghdr.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: msghdr is plain data; every pointer is set below.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_name = (&raw mut from).cast();
        message.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every buffer the message points at is valid for the sizes
        // it gives.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut message, libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        let mut frame = buffer[..n as usize].to_vec();
        if let Some((tpid, tci)) = vlan_tag(&message)
            && frame.len() >= 12
        {
            let tag = [tpid.to_be_bytes(), tci.to_be_bytes()].concat();
            frame.splice(12..12, tag);
        }
        Some((from.sll_pkttype == libc::PACKET_OUTGOING, frame))
    }

    /// Waits up to `timeout` for the first incoming frame `wanted` accepts.
    pub fn wait_for(&self, timeout: Duration, wanted: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let step = (Instant::now() + Duration::from_millis(50)).min(deadline);
            if self.received_until(step).iter().any(|f| wanted(f)) {
                return true;
            }
        }
        false
    }
}

/// A frame a container sends from a raw socket, and the listener it would
/// land at.
pub struct Forged<'a> {
    pub what: &'static str,
    pub frame: Vec<u8>,
    pub lands_at: &'a Listeners,
}

/// Sends each frame 5 times from interface `ifname` of `from` with
/// `PACKET_QDISC_BYPASS` (past its own qdisc and egress hook) and returns,
/// per frame, how many datagrams its listener received within `timeout`.
pub fn send_forged(from: &Netns, ifname: &str, frames: &[Forged], timeout: Duration) -> Vec<usize> {
    let socket = from.run(|| PacketSocket::bind(ifname).expect("a packet socket"));
    socket.bypass_qdisc().expect("PACKET_QDISC_BYPASS");
    frames
        .iter()
        .map(|forged| {
            let before = forged.lands_at.udp_received();
            for _ in 0..5 {
                // A drop on a macvlan parent's egress fails the send
                // (ENOBUFS): that is the verdict, not an error of the test.
                let _ = socket.send(&forged.frame);
            }
            let until = Instant::now() + timeout;
            while Instant::now() < until && forged.lands_at.udp_received() == before {
                std::thread::sleep(Duration::from_millis(20));
            }
            forged.lands_at.udp_received() - before
        })
        .collect()
}

/// [`send_forged`], asserting in `state`'s name that every frame arrived
/// (`arrive`) or that none did.
pub fn assert_forged(
    state: &str,
    from: &Netns,
    ifname: &str,
    frames: &[Forged],
    timeout: Duration,
    arrive: bool,
) {
    let arrived = send_forged(from, ifname, frames, timeout);
    let wrong: Vec<String> = frames
        .iter()
        .zip(&arrived)
        .filter(|(_, n)| (**n > 0) != arrive)
        .map(|(frame, n)| format!("{} ({n} arrived)", frame.what))
        .collect();
    let expected = if arrive { "every" } else { "no" };
    assert!(
        wrong.is_empty(),
        "{state}: {expected} forged frame should arrive, but: {}",
        wrong.join(", ")
    );
}

/// The VLAN tag (TPID, TCI) the kernel took off a received frame, from
/// its `PACKET_AUXDATA` message.
fn vlan_tag(message: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `message` was filled by recvmsg; the CMSG macros walk its
    // control buffer within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(message) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_PACKET && header.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata,
            // possibly unaligned.
            let aux: libc::tpacket_auxdata =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            // Kernels older than 3.14 give no TPID: 802.1Q then.
            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                aux.tp_vlan_tpid
            } else {
                0x8100
            };
            return Some((tpid, aux.tp_vlan_tci));
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(message, cmsg) };
    }
    None
}

/// Holds the calling thread on the CPU it runs on now: frames it sends
/// then go through that CPU's receive backlog in the order they were sent.
pub fn pin_to_this_cpu() {
    // SAFETY: plain syscalls on the calling thread; the set is a valid,
    // zeroed cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn link_address(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ETH_P_ALL.to_be();
    address.sll_ifindex = ifindex as i32;
    address
}
