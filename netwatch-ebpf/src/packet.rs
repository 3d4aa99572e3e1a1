//! Bounds-checked reads from a packet, the same way for TC and XDP.

use aya_ebpf::{
    helpers::bpf_skb_load_bytes,
    programs::{TcContext, XdpContext},
};
use core::{ffi::c_void, mem::MaybeUninit};

/// Largest offset read straight from packet memory. The verifier only
/// accepts a variable offset added to a packet pointer when it can bound
/// it (below 64 KiB); headers netwatch reads all lie far below this. A
/// read further in fails.
const MAX_DIRECT_OFFSET: usize = 0x0fff;

/// A packet the parser can read from.
///
/// XDP frames are read straight from packet memory ([`Linear`]: direct
/// packet access, each read's bounds proven to the verifier against
/// `data_end`). The veth programs read an skb ([`Skb`]) straight from its
/// linear data where the bytes lie there, and through
/// `bpf_skb_load_bytes`, which also reads the skb's fragments, where they
/// do not (headers in a fragment: `tests/tests/vlan_veth.rs` sends such
/// frames through a real veth). Direct reads took an established flow's
/// packet from about 110 to 88 ns (IPv4; `cargo xtask bench datapath`).
///
/// Learned the hard way (Linux 6.18, verifier instructions walked): a
/// fallback per read doubles the verifier's paths at each read. With the
/// summary on the stack that took the veth programs past one million; with
/// it in a per-CPU map entry (`parse_skb_per_cpu`) it costs
/// `from_container` 61,000 instead of 23,000, once IPv6 extension headers
/// (a loop of up to eight reads) are read through the helper alone
/// ([`Packet::read_far`]; direct reads there too: 210,000). The macvlan
/// programs keep their summary on the stack and read through the helper
/// alone: with direct reads `macvlan_child` walked 534,000 (budget:
/// 250,000, `datapath_verdicts`).
pub trait Packet {
    /// Bytes in the packet, link header included.
    fn frame_len(&self) -> usize;
    /// Reads a `T` at `offset`; `None` when it does not fit.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
    /// Copies the `N` bytes at `offset` straight into `dst` (a field of
    /// the summary, say); false, with `dst` unspecified, when they do not
    /// fit.
    ///
    /// Learned from the translated program: the BPF target copies byte
    /// arrays one byte at a time (a load and a store each), and a
    /// [`Packet::read`] whose value is matched out of its `Option` and
    /// then copied into the summary copied an IPv6 header three times:
    /// about 300 instructions per packet where this takes 80.
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        match self.read::<[u8; N]>(offset) {
            Some(bytes) => {
                *dst = bytes;
                true
            }
            None => false,
        }
    }
    /// [`Packet::read`] for what lies past the fixed headers (IPv6
    /// extension headers, a neighbour advertisement's target): rare
    /// enough that a packet may read it the slow way, when that keeps
    /// the verifier's walk short.
    #[inline(always)]
    fn read_far<T: Copy>(&self, offset: usize) -> Option<T> {
        self.read(offset)
    }
}

/// A frame whose bytes all lie in the packet memory between the context's
/// `data` and `data_end`.
///
/// Learned the hard way: with `data` and `data_end` read once, LLVM saw
/// that the parser's own length checks (against `data_end - data`) already
/// implied each read's bound and dropped the pointer comparison, which the
/// verifier needs to see ("invalid access to packet"). Each read loads the
/// two context fields afresh (volatile), so the comparison stays.
pub struct Linear {
    data: *const u32,
    data_end: *const u32,
}

impl Linear {
    /// An XDP frame (a program without `xdp.frags` sees all of it).
    #[inline(always)]
    pub fn of_xdp(ctx: &XdpContext) -> Linear {
        // SAFETY: the context pointer is valid for the run; the verifier
        // turns these field loads into the packet pointers.
        unsafe {
            Linear {
                data: &raw const (*ctx.ctx).data,
                data_end: &raw const (*ctx.ctx).data_end,
            }
        }
    }

    /// An skb's linear data.
    #[inline(always)]
    fn of_skb(ctx: &TcContext) -> Linear {
        // SAFETY: as for `of_xdp`.
        unsafe {
            Linear {
                data: &raw const (*ctx.skb.skb).data,
                data_end: &raw const (*ctx.skb.skb).data_end,
            }
        }
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // SAFETY: pointers into the program's context (see above).
        unsafe {
            (
                self.data.read_volatile() as usize,
                self.data_end.read_volatile() as usize,
            )
        }
    }
}

impl Packet for Linear {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        let (start, end) = self.bounds();
        end - start
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset > MAX_DIRECT_OFFSET {
            return None;
        }
        let (start, end) = self.bounds();
        let at = start + offset;
        if at + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: `[at, at + size_of::<T>())` lies inside the packet data
        // (checked just above, and by the verifier against data_end); `T`
        // is plain bytes, so an unaligned copy of it is valid.
        Some(unsafe { (at as *const T).read_unaligned() })
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        if offset > MAX_DIRECT_OFFSET {
            return false;
        }
        let (start, end) = self.bounds();
        let at = start + offset;
        if at + N > end {
            return false;
        }
        // SAFETY: `[at, at + N)` lies inside the packet data (checked just
        // above, and by the verifier against data_end), and `dst` is N
        // bytes of ours that the packet cannot overlap.
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, dst.as_mut_ptr(), N) };
        true
    }
}

/// A TC program's skb, read straight from its linear data where the bytes
/// lie there and through `bpf_skb_load_bytes` where they do not (headers
/// in a fragment, which GSO/GRO aggregates and some drivers produce).
pub struct Skb<'a> {
    ctx: &'a TcContext,
    linear: Linear,
}

impl<'a> Skb<'a> {
    #[inline(always)]
    pub fn of(ctx: &'a TcContext) -> Skb<'a> {
        Skb {
            ctx,
            linear: Linear::of_skb(ctx),
        }
    }
}

impl Packet for Skb<'_> {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.ctx.len() as usize
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        self.linear
            .read(offset)
            .or_else(|| load_bytes(self.ctx, offset))
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        self.linear.read_into(offset, dst) || load_bytes_into(self.ctx, offset, dst)
    }

    #[inline(always)]
    fn read_far<T: Copy>(&self, offset: usize) -> Option<T> {
        load_bytes(self.ctx, offset)
    }
}

/// A TC program's skb read through `bpf_skb_load_bytes` only: for the
/// macvlan programs, whose verifier walk direct reads took past the
/// budget (`macvlan_child` 533,808 instructions).
impl Packet for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        TcContext::len(self) as usize
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        load_bytes(self, offset)
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, offset: usize, dst: &mut [u8; N]) -> bool {
        load_bytes_into(self, offset, dst)
    }
}

/// `bpf_skb_load_bytes` straight into `dst`.
#[inline(always)]
fn load_bytes_into<const N: usize>(ctx: &TcContext, offset: usize, dst: &mut [u8; N]) -> bool {
    // SAFETY: the helper writes at most N bytes into `dst`, which holds N.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            offset as u32,
            dst.as_mut_ptr().cast::<c_void>(),
            N as u32,
        )
    };
    ret == 0
}

#[inline(always)]
fn load_bytes<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let mut out = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `out`
    // and returns 0 only when it wrote all of them.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            offset as u32,
            out.as_mut_ptr().cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
        )
    };
    // SAFETY: see above.
    (ret == 0).then(|| unsafe { out.assume_init() })
}
