//! Provisional macvlan child links: `macvlan_child` attached to a child as
//! it appears in the host namespace, before Docker moves it into its
//! container's (measured: some 200 ms before the container can send; see
//! docs/drivers.md). A TCX link stays with its device across the move, but
//! netwatch names a child's link by the container's namespace cookie, which
//! the agent learns only once Docker lists the running container; until
//! then the link is pinned as `links/mvnew-<parent>-<ifindex>`
//! ([`pins::provisional_child_path`]), and the kernel says where its device
//! is now: the link's `tcx.ifindex` (the device's current number in
//! whatever namespace it is, 0 once the device is gone).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use nix::libc;

use super::pins::{self, ProvisionalPin};

/// `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `enum bpf_link_type`: `BPF_LINK_TYPE_TCX`.
const BPF_LINK_TYPE_TCX: u32 = 11;
/// `enum bpf_attach_type`: `BPF_TCX_INGRESS`.
const BPF_TCX_INGRESS: u32 = 46;

/// The head of `struct bpf_link_info` and its `tcx` member (the union
/// starts at offset 16, aligned for its u64 members).
#[repr(C)]
#[derive(Default)]
struct TcxLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
}

/// What the kernel says of one pinned TCX link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcxLink {
    pub id: u32,
    pub prog_id: u32,
    /// The device's current ifindex, in the namespace the device is in
    /// now; 0 once the device is gone (the link is defunct).
    pub ifindex: u32,
    pub ingress: bool,
}

/// Reads the pinned link at `path`; `None` when it is not a TCX link.
///
/// # Errors
/// The pin cannot be opened or the kernel refuses the query.
pub fn tcx_link(path: &Path) -> io::Result<Option<TcxLink>> {
    let fd = obj_get(path)?;
    let mut info = TcxLinkInfo::default();
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    use std::os::fd::AsRawFd as _;
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<TcxLinkInfo>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `attr` is a BPF_OBJ_GET_INFO_BY_FD attribute; the kernel
    // writes at most `info_len` bytes to `info`, which has them and
    // outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    if info.link_type != BPF_LINK_TYPE_TCX {
        return Ok(None);
    }
    Ok(Some(TcxLink {
        id: info.id,
        prog_id: info.prog_id,
        ifindex: info.ifindex,
        ingress: info.attach_type == BPF_TCX_INGRESS,
    }))
}

fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut attr = GetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a BPF_OBJ_GET attribute; `pathname` points at a
    // NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The `bpf(2)` system call with `attr` (its size passed as the attribute's
/// size).
///
/// # Safety
/// `attr` must be a valid attribute of `cmd`, and every pointer in it valid
/// for what the kernel reads or writes there during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: as the caller promised; `attr` is `size_of::<T>()` bytes.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(done)
}

/// A provisional link whose device still exists: where it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveProvisional {
    pub pin: ProvisionalPin,
    pub link: TcxLink,
}

/// The provisional child links under `root` whose device still exists
/// (wherever it is now), and the pins of those whose device is gone.
pub fn provisional_links(root: &Path) -> (Vec<LiveProvisional>, Vec<PathBuf>) {
    let mut live = Vec::new();
    let mut defunct = Vec::new();
    for pin in pins::provisional_children(root) {
        match tcx_link(&pin.path) {
            Ok(Some(link)) if link.ifindex != 0 && link.ingress => {
                live.push(LiveProvisional { pin, link });
            }
            // Gone device, or not what netwatch pins there.
            Ok(_) => defunct.push(pin.path),
            Err(e) => log::warn!("cannot read provisional link {}: {e}", pin.path.display()),
        }
    }
    (live, defunct)
}

/// Which provisional link may be the one on a child that is now interface
/// `ifindex` of its container's namespace, running program `prog_id`: the
/// one live link on that number (two provisional links on one number,
/// each in its own namespace, cannot be told apart by the number alone:
/// then none is chosen, and the child gets a link of its own).
pub fn adoptable(live: &[LiveProvisional], ifindex: u32, prog_id: u32) -> Option<&LiveProvisional> {
    let mut on_it = live
        .iter()
        .filter(|p| p.link.ifindex == ifindex && p.link.prog_id == prog_id);
    let first = on_it.next()?;
    on_it.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(parent: u32, attached_as: u32, now: u32, id: u32) -> LiveProvisional {
        LiveProvisional {
            pin: ProvisionalPin {
                parent,
                ifindex: attached_as,
                path: pins::provisional_child_path(Path::new("/x"), parent, attached_as),
            },
            link: TcxLink {
                id,
                prog_id: 7,
                ifindex: now,
                ingress: true,
            },
        }
    }

    #[test]
    fn the_one_link_now_on_the_childs_number_is_adopted() {
        let links = [live(60, 61, 61, 1), live(60, 62, 62, 2)];
        assert_eq!(adoptable(&links, 62, 7).map(|p| p.link.id), Some(2));
    }

    #[test]
    fn a_child_renumbered_by_the_move_is_found_by_its_number_now() {
        let links = [live(60, 61, 5, 1)];
        assert_eq!(adoptable(&links, 5, 7).map(|p| p.link.id), Some(1));
        assert_eq!(adoptable(&links, 61, 7), None);
    }

    #[test]
    fn two_links_on_one_number_are_not_guessed_between() {
        let links = [live(60, 61, 5, 1), live(60, 62, 5, 2)];
        assert_eq!(adoptable(&links, 5, 7), None);
    }

    #[test]
    fn another_programs_link_is_not_adopted() {
        let links = [live(60, 61, 61, 1)];
        assert_eq!(adoptable(&links, 61, 8), None);
    }
}
