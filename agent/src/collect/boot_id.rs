//! This boot's id (`/proc/sys/kernel/random/boot_id`): what tells a reboot
//! from a restart of the agent, on the agent (an action record's boot id)
//! and on the server (a node back under a new boot id).
//!
//! Read once, at start: it cannot change while the agent runs, because a
//! reboot restarts the agent. One that cannot be read is not an empty
//! string to compare but a known unknown: the agent refuses reboots (it
//! could not tell their end), reports the error with every reboot check,
//! and sends an empty boot id, which the server never takes for a new boot.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, thiserror::Error)]
pub enum BootIdError {
    #[error("cannot read the boot id from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("{} holds no boot id", path.display())]
    Empty { path: PathBuf },
}

/// This boot's id, or why it is unknown.
#[derive(Clone, Debug)]
pub struct BootId(Result<String, BootIdError>);

impl BootId {
    /// Reads the id from `path` (trimmed; empty is an error).
    pub fn read(path: &Path) -> Self {
        let read = match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Err(BootIdError::Empty {
                path: path.to_owned(),
            }),
            Ok(text) => Ok(text.trim().to_owned()),
            Err(e) => Err(BootIdError::Read {
                path: path.to_owned(),
                source: Arc::new(e),
            }),
        };
        Self(read)
    }

    pub fn known(&self) -> Result<&str, &BootIdError> {
        self.0.as_deref()
    }

    /// Why it is unknown, if it is.
    pub fn error(&self) -> Option<&BootIdError> {
        self.0.as_ref().err()
    }

    /// As Hello and the host facts carry it: empty when unknown (proto3's
    /// "not set").
    pub fn wire(&self) -> &str {
        self.known().unwrap_or_default()
    }
}

/// A boot id known to be this one (tests name their boots).
impl From<&str> for BootId {
    fn from(id: &str) -> Self {
        Self(Ok(id.to_owned()))
    }
}

impl From<&String> for BootId {
    fn from(id: &String) -> Self {
        Self(Ok(id.clone()))
    }
}

impl From<BootIdError> for BootId {
    fn from(e: BootIdError) -> Self {
        Self(Err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_an_error_not_an_empty_id() {
        let dir = std::env::temp_dir().join(format!("rollcall-boot-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("boot_id");
        std::fs::write(&file, "6f1c0a9e-d5c3-4c4b-8f5e-0a1b2c3d4e5f\n").expect("write");
        let boot = BootId::read(&file);
        assert_eq!(
            boot.known().ok(),
            Some("6f1c0a9e-d5c3-4c4b-8f5e-0a1b2c3d4e5f")
        );
        assert!(boot.error().is_none());

        std::fs::write(&file, " \n").expect("write");
        let empty = BootId::read(&file);
        assert!(
            matches!(empty.known(), Err(BootIdError::Empty { .. })),
            "{empty:?}"
        );
        assert_eq!(empty.wire(), "");

        let missing = BootId::read(&dir.join("nonexistent"));
        let err = missing.error().expect("unknown").to_string();
        assert!(
            err.starts_with("cannot read the boot id from ") && err.contains("nonexistent"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
