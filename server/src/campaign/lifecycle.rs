//! One node's way through a campaign: a state machine with a timeout per
//! state. The scheduler persists the state before it acts on it, so a
//! restarted server picks each node up where it was.
//!
//! ```text
//! pending → precheck → drain → patch → reboot → wait-return → postcheck → undrain → done
//!              │                 └──(no reboot needed)──────→ postcheck
//!              └→ skipped                      any active state ──(error, timeout)──→ failed
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{RebootPolicy, Timeouts};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Pending,
    Precheck,
    Drain,
    Patch,
    Reboot,
    WaitReturn,
    Postcheck,
    Undrain,
    Done,
    Failed,
    Skipped,
}

/// What the last step found out, to pick the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The node reported reboot-required after its patch.
    pub reboot_required: bool,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::Pending,
        Step::Precheck,
        Step::Drain,
        Step::Patch,
        Step::Reboot,
        Step::WaitReturn,
        Step::Postcheck,
        Step::Undrain,
        Step::Done,
        Step::Failed,
        Step::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Pending => "pending",
            Step::Precheck => "precheck",
            Step::Drain => "drain",
            Step::Patch => "patch",
            Step::Reboot => "reboot",
            Step::WaitReturn => "wait-return",
            Step::Postcheck => "postcheck",
            Step::Undrain => "undrain",
            Step::Done => "done",
            Step::Failed => "failed",
            Step::Skipped => "skipped",
        }
    }

    /// A node in one of these steps is (or may be) unavailable to the cloud.
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            Step::Pending | Step::Done | Step::Failed | Step::Skipped
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Step::Done | Step::Failed | Step::Skipped)
    }

    /// The step after a successful one.
    pub fn next(self, policy: RebootPolicy, facts: Facts) -> Step {
        match self {
            Step::Pending => Step::Precheck,
            Step::Precheck => Step::Drain,
            Step::Drain => Step::Patch,
            Step::Patch => {
                let reboot = match policy {
                    RebootPolicy::Always => true,
                    RebootPolicy::Never => false,
                    RebootPolicy::IfRequired => facts.reboot_required,
                };
                if reboot {
                    Step::Reboot
                } else {
                    Step::Postcheck
                }
            }
            Step::Reboot => Step::WaitReturn,
            Step::WaitReturn => Step::Postcheck,
            Step::Postcheck => Step::Undrain,
            Step::Undrain => Step::Done,
            terminal => terminal,
        }
    }

    /// How long a node may stay in this step before it fails.
    pub fn timeout(self, t: &Timeouts) -> Option<Duration> {
        let secs = match self {
            Step::Precheck => t.precheck_secs,
            Step::Drain => t.drain_secs,
            Step::Patch => t.patch_secs,
            Step::Reboot => t.reboot_secs,
            Step::WaitReturn => t.return_secs,
            Step::Postcheck => t.postcheck_secs,
            Step::Undrain => t.undrain_secs,
            Step::Pending | Step::Done | Step::Failed | Step::Skipped => return None,
        };
        Some(Duration::from_secs(secs))
    }

    /// Whether `elapsed` in this step is past its timeout.
    pub fn timed_out(self, t: &Timeouts, elapsed: Duration) -> bool {
        self.timeout(t).is_some_and(|limit| elapsed > limit)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Step {
    type Err = rollcall_proto::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        rollcall_proto::names::parse("step", s, &Step::ALL, Step::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(policy: RebootPolicy, reboot_required: bool) -> Vec<Step> {
        let mut steps = vec![Step::Pending];
        let mut s = Step::Pending;
        while !s.is_terminal() {
            s = s.next(policy, Facts { reboot_required });
            steps.push(s);
        }
        steps
    }

    #[test]
    fn the_path_follows_the_reboot_policy() {
        use Step::*;
        let full = [
            Pending, Precheck, Drain, Patch, Reboot, WaitReturn, Postcheck, Undrain, Done,
        ];
        let no_reboot = [Pending, Precheck, Drain, Patch, Postcheck, Undrain, Done];
        assert_eq!(walk(RebootPolicy::IfRequired, true), full);
        assert_eq!(walk(RebootPolicy::IfRequired, false), no_reboot);
        assert_eq!(walk(RebootPolicy::Always, false), full);
        assert_eq!(walk(RebootPolicy::Never, true), no_reboot);
    }

    #[test]
    fn every_active_step_has_a_timeout_and_terminal_ones_none() {
        let t = Timeouts::default();
        for s in walk(RebootPolicy::Always, true) {
            assert_eq!(s.timeout(&t).is_some(), s.is_active(), "{s:?}");
        }
        assert!(Step::Patch.timed_out(&t, Duration::from_secs(t.patch_secs + 1)));
        assert!(!Step::Patch.timed_out(&t, Duration::from_secs(t.patch_secs)));
        assert!(!Step::Failed.timed_out(&t, Duration::from_secs(u64::MAX / 2)));
    }

    #[test]
    fn names_read_back_and_are_the_stored_names() {
        // Today's words: in stores, action ids and scripts' --json.
        let names = [
            "pending",
            "precheck",
            "drain",
            "patch",
            "reboot",
            "wait-return",
            "postcheck",
            "undrain",
            "done",
            "failed",
            "skipped",
        ];
        for (step, name) in Step::ALL.into_iter().zip(names) {
            assert_eq!(step.as_str(), name);
            assert_eq!(name.parse::<Step>(), Ok(step));
            assert_eq!(
                serde_json::to_value(step).expect("json"),
                serde_json::Value::String(name.to_owned()),
            );
        }
        let e = "wait_return".parse::<Step>().expect_err("kebab-case only");
        assert_eq!((e.field, e.value.as_str()), ("step", "wait_return"));
        assert!(e.to_string().contains("wait-return"), "{e}");
    }
}
