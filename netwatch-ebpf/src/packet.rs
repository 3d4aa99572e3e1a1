//! Bounds-checked reads from a packet, the same way for TC and XDP.

use aya_ebpf::{
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use core::{ffi::c_void, mem::MaybeUninit};

/// A packet the parser can read from. Every read is a helper call that
/// checks bounds against the packet's real length (including non-linear
/// skb data), so the parser needs no pointer arithmetic the verifier must
/// follow.
pub trait Packet {
    /// Bytes in the packet, link header included.
    fn frame_len(&self) -> usize;
    /// Reads a `T` at `offset`; `None` when it does not fit.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
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

impl Packet for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let mut out = MaybeUninit::<T>::uninit();
        // SAFETY: as for TC; bpf_xdp_load_bytes needs kernel ≥ 5.18.
        let ret = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                offset as u32,
                out.as_mut_ptr().cast::<c_void>(),
                core::mem::size_of::<T>() as u32,
            )
        };
        // SAFETY: see above.
        (ret == 0).then(|| unsafe { out.assume_init() })
    }
}
