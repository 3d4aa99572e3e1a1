//! How fast the agent's attaches go: at the pace of the host's RCU grace
//! periods, or expedited while something is pending
//! (`agent --expedite-attach`, [`crate::host::rcu`]).
//!
//! Every path that attaches asks it: the sync's reconcile, the saved plan
//! guarded at start, and interfaces guarded as they appear (bridge ports,
//! macvlan children, overlay sandbox veths). The last one is what a boot
//! sees when dockerd restores hundreds of containers at once.

use std::path::{Path, PathBuf};

use log::warn;

use crate::host::rcu::{Expedited, RCU_EXPEDITED, RcuKnob};

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct AttachPace {
    expedite: bool,
    run_dir: PathBuf,
}

impl AttachPace {
    /// Expedited when `expedite`; the replaced value is kept in `run_dir`.
    pub fn new(expedite: bool, run_dir: &Path) -> AttachPace {
        AttachPace {
            expedite,
            run_dir: run_dir.to_owned(),
        }
    }

    /// Expedited grace periods until the guard is dropped, when the flag
    /// is on and `pending` names what is about to be attached (`None`:
    /// nothing). `pending` is asked only with the flag, so an agent without
    /// it walks no pins for it. Attaching goes on at the normal pace when
    /// the knob cannot be set.
    pub fn expedite(&self, pending: impl FnOnce() -> Option<String>) -> Option<Expedited> {
        if !self.expedite {
            return None;
        }
        let why = pending()?;
        RcuKnob::host(&self.run_dir)
            .expedite(&why)
            .unwrap_or_else(|e| {
                warn!(
                    "--expedite-attach: cannot set {RCU_EXPEDITED} ({e}); attaching at the normal pace"
                );
                None
            })
    }
}
