//! The agent's account of what it guards: after every sync it logs what
//! became unguarded, what still is (again every [`REMINDER`], never per
//! packet), what is guarded again, and publishes the latest
//! [`Assessment`] for the metrics.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use log::{info, warn};

use crate::guard::{Alarm, Assessment};

/// How often an alarm that stays is logged again.
pub const REMINDER: Duration = Duration::from_secs(300);

/// The latest assessment, shared with whoever reports it (the metrics).
pub type SharedAssessment = Arc<Mutex<Option<Assessment>>>;

/// Remembers what was logged, to log changes and reminders only.
#[derive(Debug, Default)]
pub struct GuardWatch {
    /// Alarms of the last sync, with when each was last logged.
    alarms: BTreeMap<Alarm, Instant>,
    /// Unguarded networks and endpoints nobody asked netwatch to deny,
    /// already told once.
    told: BTreeSet<Alarm>,
    shared: SharedAssessment,
}

impl GuardWatch {
    /// The handle the metrics read the latest assessment from.
    pub fn shared(&self) -> SharedAssessment {
        Arc::clone(&self.shared)
    }

    /// Logs what changed since the last sync (and reminders due at `now`),
    /// publishes `assessment`, and returns its alarms.
    pub fn update(&mut self, assessment: Assessment, now: Instant) -> Vec<Alarm> {
        let alarms = assessment.alarms();
        let mut next = BTreeMap::new();
        for alarm in &alarms {
            let logged = match self.alarms.get(alarm) {
                None => {
                    warn!("unguarded: {alarm}");
                    now
                }
                Some(&last) if now.duration_since(last) >= REMINDER => {
                    warn!(
                        "still unguarded ({:.0?} since the last reminder): {alarm}",
                        now.duration_since(last)
                    );
                    now
                }
                Some(&last) => last,
            };
            next.insert(alarm.clone(), logged);
        }
        for gone in self.alarms.keys().filter(|a| !next.contains_key(*a)) {
            let what = match &gone.container {
                Some(container) => format!("endpoint of {container} on {}", gone.network),
                None => format!("network {}", gone.network),
            };
            info!("no longer unguarded: {what}");
        }
        self.alarms = next;
        let by_choice: BTreeSet<Alarm> = assessment.unguarded_by_choice().into_iter().collect();
        for new in by_choice.difference(&self.told) {
            info!("not guarded (its policy denies nothing, so this is no alarm): {new}");
        }
        self.told = by_choice;
        if let Ok(mut shared) = self.shared.lock() {
            *shared = Some(assessment);
        }
        alarms
    }

    /// When the alarm was last logged (tests).
    #[cfg(test)]
    fn last_logged(&self, alarm: &Alarm) -> Option<Instant> {
        self.alarms.get(alarm).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{Guard, Mode, NetworkGuard};

    fn assessment(unguarded: bool) -> Assessment {
        Assessment {
            networks: vec![NetworkGuard {
                id: "n1".into(),
                name: "back".into(),
                driver: "macvlan".into(),
                denied_by: Some("internal: true"),
                guard: Guard {
                    mode: if unguarded {
                        Mode::Unguarded
                    } else {
                        Mode::Enforced
                    },
                    why: "macvlan: no hook".into(),
                },
                endpoints: Vec::new(),
            }],
        }
    }

    #[test]
    fn an_alarm_is_logged_when_first_seen_then_only_every_reminder() {
        let mut watch = GuardWatch::default();
        let start = Instant::now();
        let alarms = watch.update(assessment(true), start);
        assert_eq!(alarms.len(), 1);
        assert_eq!(watch.last_logged(&alarms[0]), Some(start));
        let soon = start + Duration::from_secs(30);
        watch.update(assessment(true), soon);
        assert_eq!(
            watch.last_logged(&alarms[0]),
            Some(start),
            "not logged again before the reminder is due"
        );
        let later = start + REMINDER;
        watch.update(assessment(true), later);
        assert_eq!(watch.last_logged(&alarms[0]), Some(later), "reminded");
        assert!(watch.update(assessment(false), later).is_empty());
        assert_eq!(watch.last_logged(&alarms[0]), None);
        assert_eq!(
            watch.shared().lock().unwrap().as_ref(),
            Some(&assessment(false)),
            "the latest assessment is published"
        );
    }
}
