//! Checks of the files and directories a configuration names, shared by the
//! server, the agent and the operator CLI so each refuses the same things
//! with the same one-line message.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A private key file that users other than its owner may read or change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "private key {path} is open to other users (mode {mode:04o}); allow its owner only: chmod 600 {path}"
)]
pub struct KeyModeError {
    pub path: String,
    pub mode: u32,
}

/// Refuses a private key that group or others may read, write or execute
/// (mode & 0o077 != 0): a key others can read is no longer a secret, and
/// using it without a word hides that. A file that cannot be looked at
/// passes here; reading it reports why.
pub fn check_private_key(path: &Path) -> Result<(), KeyModeError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyModeError {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Checks that `path` can be (or already is) a directory: the path itself,
/// or the nearest part of it that exists, must be a directory. `key` names
/// the setting in the message ("data_dir", "actions.state_dir").
pub fn check_dir(key: &str, path: &Path) -> Result<(), String> {
    for part in path.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let Ok(meta) = std::fs::metadata(part) else {
            continue;
        };
        if meta.is_dir() {
            return Ok(());
        }
        return Err(if part == path {
            format!(
                "{key} {} is a file, not a directory: name a directory (or move the file away)",
                path.display()
            )
        } else {
            format!(
                "{key} {}: {} is a file, not a directory: name a directory (or move the file away)",
                path.display(),
                part.display()
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rollcall-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_key_open_to_group_or_others_is_refused_with_the_fix() {
        let dir = temp("key");
        let key = dir.join("k.key");
        fs::write(&key, "secret").expect("write");
        for (mode, refused) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o604, true),
            (0o620, true),
        ] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).expect("chmod");
            let got = check_private_key(&key);
            assert_eq!(got.is_err(), refused, "mode {mode:o}: {got:?}");
            if let Err(e) = got {
                let line = e.to_string();
                assert!(line.contains(&format!("{mode:04o}")), "{line}");
                assert!(
                    line.contains(&format!("chmod 600 {}", key.display())),
                    "{line}"
                );
            }
        }
        assert_eq!(check_private_key(&dir.join("missing.key")), Ok(()));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_directory_setting_that_names_a_file_is_refused() {
        let dir = temp("dir");
        let file = dir.join("plain");
        fs::write(&file, "").expect("write");
        assert_eq!(check_dir("data_dir", &dir), Ok(()));
        assert_eq!(check_dir("data_dir", &dir.join("new/deeper")), Ok(()));
        let err = check_dir("data_dir", &file).expect_err("a file");
        assert!(
            err.starts_with(&format!("data_dir {} is a file", file.display())),
            "{err}"
        );
        let err = check_dir("data_dir", &file.join("below")).expect_err("below a file");
        assert!(
            err.contains(&format!("{} is a file", file.display())),
            "{err}"
        );
        assert_eq!(check_dir("data_dir", Path::new("relative/new")), Ok(()));
        fs::remove_dir_all(&dir).ok();
    }
}
