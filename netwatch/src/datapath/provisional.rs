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

use std::path::{Path, PathBuf};

use super::{
    pinned::{TcxLink, tcx_link},
    pins::{self, ProvisionalPin},
};

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
