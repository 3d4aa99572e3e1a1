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
/// `data_end`). TC programs read through `bpf_skb_load_bytes`, which checks
/// bounds against the skb's real length, non-linear data included.
///
/// Learned the hard way (Linux 6.18, `BPF_PROG_TEST_RUN`): direct packet
/// access in the veth programs, with the helper kept for frames whose
/// headers are not all in the linear data, took the verifier past its one
/// million instructions — a fallback per read doubles the paths at every
/// read, and even one choice per packet (a direct parser for all-linear
/// frames, the helper's for the others) runs the parser and everything
/// after it twice, with packet-pointer ranges that defeat state pruning.
/// Dropping the fallback would misjudge GSO/GRO aggregates (headers linear,
/// payload in fragments) and `bpf_skb_pull_data` would unclone TCP's
/// transmit skbs; so the veth programs keep the helper.
pub trait Packet {
    /// Bytes in the packet, link header included.
    fn frame_len(&self) -> usize;
    /// Reads a `T` at `offset`; `None` when it does not fit.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
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
    len: usize,
}

impl Linear {
    /// An XDP frame (a program without `xdp.frags` sees all of it).
    #[inline(always)]
    pub fn of_xdp(ctx: &XdpContext) -> Linear {
        // SAFETY: the context pointer is valid for the run; the verifier
        // turns these field loads into the packet pointers.
        let mut linear = unsafe {
            Linear {
                data: &raw const (*ctx.ctx).data,
                data_end: &raw const (*ctx.ctx).data_end,
                len: 0,
            }
        };
        let (start, end) = linear.bounds();
        linear.len = end - start;
        linear
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
        self.len
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
}

impl Packet for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        TcContext::len(self) as usize
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes at most size_of::<T>() bytes into `out`
        // and returns 0 only when it wrote all of them.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.skb.skb.cast::<c_void>(),
                offset as u32,
                out.as_mut_ptr().cast::<c_void>(),
                core::mem::size_of::<T>() as u32,
            )
        };
        // SAFETY: see above.
        (ret == 0).then(|| unsafe { out.assume_init() })
    }
}
