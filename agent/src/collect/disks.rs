//! Real mounted filesystems, as `df` shows them, from /proc/self/mountinfo
//! and statvfs(2).

use std::collections::HashSet;
use std::path::Path;

use rollcall_proto::model::{DisksSection, Filesystem};

/// Filesystem types that hold no operator data: kernel interfaces,
/// memory-backed, image layers and the like.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "nfsd",
    "aufs",
    "shm",
    "zram",
    // Rootless and fuse-based container storage: one mount per container.
    "fuse.fuse-overlayfs",
    // Network filesystems: a dead server would hang statvfs, and with it
    // every report. They are the storage cluster's to watch, not the node's.
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.cephfs",
    "9p",
    "afs",
];

/// One line of mountinfo that matters to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub read_only: bool,
    /// major:minor, to drop bind mounts of the same filesystem.
    pub dev_id: String,
}

/// Parses proc(5) mountinfo and keeps real filesystems, one mount per
/// device (the shortest mount point: bind mounts of a device into
/// containers would otherwise repeat it).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = text
        .lines()
        .filter_map(parse_line)
        .filter(|m| !PSEUDO.contains(&m.fs_type.as_str()))
        .collect();
    mounts.sort_by(|a, b| {
        (a.mount_point.len(), &a.mount_point).cmp(&(b.mount_point.len(), &b.mount_point))
    });
    let mut seen = HashSet::new();
    mounts.retain(|m| seen.insert(m.dev_id.clone()));
    mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    mounts
}

fn parse_line(line: &str) -> Option<Mount> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    let (dev_id, mount_point, options) = (left.get(2)?, left.get(4)?, left.get(5)?);
    let (fs_type, source) = (right.first()?, right.get(1)?);
    let super_options = right.get(2).copied().unwrap_or("");
    let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    Some(Mount {
        mount_point: unescape(mount_point),
        device: unescape(source),
        fs_type: (*fs_type).to_owned(),
        read_only: ro(options) || ro(super_options),
        dev_id: (*dev_id).to_owned(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\\040`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sizes of one mounted filesystem.
pub fn statvfs(mount_point: &Path) -> Result<(u64, u64, u64, u64, u64), String> {
    let st = rustix::fs::statvfs(mount_point).map_err(|e| e.to_string())?;
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    let total = st.f_blocks.saturating_mul(frsize);
    let free = st.f_bfree.saturating_mul(frsize);
    let avail = st.f_bavail.saturating_mul(frsize);
    Ok((
        total,
        total.saturating_sub(free),
        avail,
        st.f_files,
        st.f_files.saturating_sub(st.f_ffree),
    ))
}

/// Every real filesystem with its sizes. `root` prefixes the mountinfo
/// path (tests use fixture trees); mount points are measured as they are.
pub fn collect(mountinfo: &Path) -> DisksSection {
    let text = match std::fs::read_to_string(mountinfo) {
        Ok(t) => t,
        Err(e) => {
            return DisksSection {
                filesystems: Vec::new(),
                error: format!("cannot read {}: {e}", mountinfo.display()),
            };
        }
    };
    let mut errors = Vec::new();
    let filesystems = parse_mountinfo(&text)
        .into_iter()
        .filter_map(|m| match statvfs(Path::new(&m.mount_point)) {
            Ok((total, used, available, inodes_total, inodes_used)) => Some(Filesystem {
                mount_point: m.mount_point,
                device: m.device,
                fs_type: m.fs_type,
                total_bytes: total,
                used_bytes: used,
                available_bytes: available,
                inodes_total,
                inodes_used,
                read_only: m.read_only,
            }),
            Err(e) => {
                errors.push(format!("{}: {e}", m.mount_point));
                None
            }
        })
        .collect();
    DisksSection {
        filesystems,
        error: errors.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_real_filesystems_once_and_drops_the_rest() {
        let text = include_str!("../../tests/fixtures/mountinfo-controller.txt");
        let mounts = parse_mountinfo(text);
        let points: Vec<(&str, &str, bool)> = mounts
            .iter()
            .map(|m| (m.mount_point.as_str(), m.fs_type.as_str(), m.read_only))
            .collect();
        assert_eq!(
            points,
            [
                ("/", "ext4", false),
                ("/boot", "ext2", false),
                ("/mnt/iso image", "iso9660", true),
                ("/var/lib/docker", "xfs", false),
                // A real disk of its own, even below the engine's directory.
                ("/var/lib/docker/volumes/glance/_data", "ext4", false),
            ]
        );
        assert_eq!(mounts[0].device, "/dev/mapper/vg0-root");
    }

    #[test]
    fn this_hosts_filesystems_have_sizes() {
        let section = collect(Path::new("/proc/self/mountinfo"));
        for fs in &section.filesystems {
            assert!(fs.used_bytes <= fs.total_bytes, "{fs:?}");
        }
        let missing = collect(Path::new("/nonexistent/mountinfo"));
        assert!(missing.error.contains("/nonexistent/mountinfo"));
    }
}
