//! Raw Ethernet frames in and out of one interface (AF_PACKET), for tests
//! that send what no socket API would build (malformed, spoofed) and watch
//! what arrives at the other end.
//!
//! A socket belongs to the network namespace it was created in: create it
//! inside [`crate::reach::Netns::run`] and use it from any thread.

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
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends from now on with `PACKET_QDISC_BYPASS`: straight to the
    /// driver, past the interface's qdisc and its TC/TCX egress hook (only
    /// CAP_NET_RAW is needed, which Docker gives containers by default).
    pub fn bypass_qdisc(&self) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: the fd is ours; the option value is a valid c_int of the
        // size passed.
        let done = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one frame as it is (the kernel adds nothing).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
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
    /// interface sends are left out).
    pub fn received_until(&self, until: Instant) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buffer = vec![0u8; 65536];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return frames;
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
            // SAFETY: sockaddr_ll is plain data; recvfrom fills it.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the buffer and the address are valid for their sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &raw mut from_len,
                )
            };
            if n < 0 {
                continue;
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                frames.push(buffer[..n as usize].to_vec());
            }
        }
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

fn link_address(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ETH_P_ALL.to_be();
    address.sll_ifindex = ifindex as i32;
    address
}
