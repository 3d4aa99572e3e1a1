//! Expedited RCU grace periods while the agent attaches (`agent
//! --expedite-attach`).
//!
//! Why: the first TCX program on a device's hook makes the kernel swap the
//! hook's program array and wait for an RCU grace period
//! (`tcx_entry_sync()` → `synchronize_rcu()`) while it holds `rtnl_lock`.
//! Measured on this project's 2-core machines: 12–25 ms per attach, two
//! per veth, serialized by rtnl, so 500 endpoints took 12.2 s; with
//! `/sys/kernel/rcu_expedited` set, 0.1 s (BENCHMARKS.md, Scale). Nothing
//! within netwatch shortens the wait itself: attaching from several
//! threads does not overlap them (rtnl), and the TCX API has no batch
//! attach.
//!
//! The knob is host-wide: while it is 1, every grace period on the host is
//! expedited (an IPI to every CPU), which latency-sensitive workloads may
//! notice. So it is set only while attaches are pending and put back
//! right after. The value it replaced is written to a file first, so that
//! an agent killed mid-attach leaves a record the next start restores
//! from ([`restore_leftover`]). A host that already runs expedited (the
//! `rcupdate.rcu_expedited=1` boot option) is left alone; one booted with
//! `rcupdate.rcu_normal=1` ignores the knob, which is logged.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use log::{info, warn};

/// The kernel's knob (Documentation/admin-guide/kernel-parameters.txt,
/// `rcupdate.rcu_expedited`; writable at run time since 3.19).
pub const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";
/// Overrides the knob above when 1 (`rcupdate.rcu_normal`, since 4.6).
pub const RCU_NORMAL: &str = "/sys/kernel/rcu_normal";
/// The file in the run directory that holds the value to put back.
const SAVED_FILE: &str = "rcu_expedited.saved";

/// Where the knob is, and where the value it replaced is kept: the real
/// ones in the agent, files of their own in unit tests.
#[derive(Clone, Debug)]
pub struct RcuKnob {
    knob: PathBuf,
    normal: PathBuf,
    saved: PathBuf,
}

impl RcuKnob {
    /// The host's knob; the replaced value is kept in `run_dir`.
    pub fn host(run_dir: &Path) -> RcuKnob {
        RcuKnob {
            knob: RCU_EXPEDITED.into(),
            normal: RCU_NORMAL.into(),
            saved: run_dir.join(SAVED_FILE),
        }
    }

    #[cfg(test)]
    fn at(dir: &Path) -> RcuKnob {
        RcuKnob {
            knob: dir.join("rcu_expedited"),
            normal: dir.join("rcu_normal"),
            saved: dir.join(SAVED_FILE),
        }
    }

    fn read(path: &Path) -> io::Result<String> {
        Ok(fs::read_to_string(path)?.trim().to_owned())
    }

    /// Sets the knob to 1 until the returned guard drops, for what `why`
    /// says (logged: "3 pending attaches"). `None` when it already is 1: nothing to put
    /// back. An error leaves the host as it was.
    ///
    /// # Errors
    /// The knob cannot be read or written (no sysfs, not root), or the
    /// replaced value cannot be saved first.
    pub fn expedite(&self, why: &str) -> io::Result<Option<Expedited>> {
        let was = Self::read(&self.knob)?;
        if was == "1" {
            return Ok(None);
        }
        if Self::read(&self.normal).is_ok_and(|v| v == "1") {
            warn!(
                "--expedite-attach: {} is 1 (rcupdate.rcu_normal), which overrides {}; \
                 attaches wait for normal grace periods",
                self.normal.display(),
                self.knob.display()
            );
        }
        // Saved before the change: a crash between the two leaves a file
        // that restores the value it already has.
        fs::write(&self.saved, &was)?;
        if let Err(e) = fs::write(&self.knob, "1") {
            let _ = fs::remove_file(&self.saved);
            return Err(e);
        }
        info!(
            "expedited RCU grace periods ({} = 1, was {was}) for {why}",
            self.knob.display()
        );
        Ok(Some(Expedited {
            knob: self.clone(),
            was,
        }))
    }

    /// Puts back a value an earlier agent replaced and did not restore
    /// (killed mid-attach). Returns the value restored, if any.
    ///
    /// # Errors
    /// The saved value cannot be read or written back; the file stays for
    /// the next try.
    pub fn restore_leftover(&self) -> io::Result<Option<String>> {
        let was = match Self::read(&self.saved) {
            Ok(was) => was,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if was != "0" && was != "1" {
            // Not a value this module writes: leave the knob alone.
            fs::remove_file(&self.saved)?;
            warn!(
                "ignored {}: {was:?} is not a value of {}",
                self.saved.display(),
                self.knob.display()
            );
            return Ok(None);
        }
        fs::write(&self.knob, &was)?;
        fs::remove_file(&self.saved)?;
        warn!(
            "restored {} to {was}: an earlier agent set it for an attach and stopped before \
             putting it back",
            self.knob.display()
        );
        Ok(Some(was))
    }
}

/// Expedited grace periods until dropped; then the knob has its old value.
#[derive(Debug)]
pub struct Expedited {
    knob: RcuKnob,
    was: String,
}

impl Drop for Expedited {
    fn drop(&mut self) {
        match fs::write(&self.knob.knob, &self.was) {
            Ok(()) => {
                let _ = fs::remove_file(&self.knob.saved);
            }
            // The saved file stays: the next start tries again.
            Err(e) => warn!(
                "cannot put {} back to {}: {e}; the next agent start will try again",
                self.knob.knob.display(),
                self.was
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A directory of files standing in for sysfs, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netwatch-rcu-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn knob_with(value: &str) -> (Scratch, RcuKnob) {
        let dir = Scratch::new();
        let knob = RcuKnob::at(dir.path());
        fs::write(&knob.knob, format!("{value}\n")).unwrap();
        (dir, knob)
    }

    #[test]
    fn the_knob_is_set_while_attaching_and_put_back_after() {
        let (_dir, knob) = knob_with("0");
        let guard = knob
            .expedite("3 attaches")
            .unwrap()
            .expect("was 0, so expedited");
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "1");
        assert_eq!(RcuKnob::read(&knob.saved).unwrap(), "0");
        drop(guard);
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "0");
        assert!(!knob.saved.exists(), "nothing left to restore");
    }

    #[test]
    fn a_host_already_expedited_is_left_alone() {
        let (_dir, knob) = knob_with("1");
        assert!(knob.expedite("1 attach").unwrap().is_none());
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "1");
        assert!(!knob.saved.exists());
    }

    #[test]
    fn an_agent_killed_mid_attach_is_undone_by_the_next_start() {
        let (_dir, knob) = knob_with("0");
        let guard = knob.expedite("500 attaches").unwrap().unwrap();
        std::mem::forget(guard); // as a SIGKILL would
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "1");
        assert_eq!(knob.restore_leftover().unwrap().as_deref(), Some("0"));
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "0");
        assert_eq!(knob.restore_leftover().unwrap(), None, "done once");
    }

    #[test]
    fn a_saved_value_that_is_not_the_knobs_is_ignored() {
        let (_dir, knob) = knob_with("1");
        fs::write(&knob.saved, "garbage").unwrap();
        assert_eq!(knob.restore_leftover().unwrap(), None);
        assert_eq!(RcuKnob::read(&knob.knob).unwrap(), "1");
        assert!(!knob.saved.exists());
    }

    #[test]
    fn a_knob_that_cannot_be_written_leaves_nothing_to_restore() {
        let dir = Scratch::new();
        let knob = RcuKnob::at(dir.path());
        // No knob file at all: as on a host without sysfs.
        assert!(knob.expedite("1 attach").is_err());
        assert!(!knob.saved.exists());
    }
}
