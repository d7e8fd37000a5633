//! A vessel's directory: `0700` and its user's, with a tmpfs of the disk
//! limit mounted on it when the daemon is root; measured otherwise.

use std::path::Path;

/// Creates a slot directory, `0700`, owned by `user` when given.
pub(super) fn make_slot_dir(dir: &Path, user: Option<(u32, u32)>) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let fail = |e: std::io::Error| format!("cannot create {}: {e}", dir.display());
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    if let Some((uid, gid)) = user {
        rustix::fs::chown(
            dir,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(|e| format!("cannot give {} to uid {uid}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Mounts a tmpfs of `size` bytes on `dir`, `0700`, owned by `owner`.
pub(super) fn mount_tmpfs(dir: &Path, size: u64, owner: (u32, u32)) -> Result<(), String> {
    use rustix::mount::{MountFlags, mount};
    let data = std::ffi::CString::new(format!(
        "size={size},mode=0700,uid={},gid={}",
        owner.0, owner.1
    ))
    .map_err(|e| e.to_string())?;
    mount(
        "actogrid-vessel",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", dir.display()))
}

/// Whether a tmpfs can be mounted under `slots` (tried once).
pub(super) fn can_mount_tmpfs(slots: &Path) -> bool {
    let dir = slots.join(format!(".mount-probe-{}", std::process::id()));
    if make_slot_dir(&dir, None).is_err() {
        return false;
    }
    let mounted = mount_tmpfs(&dir, 1 << 20, (0, 0)).is_ok();
    if mounted {
        let _ = rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
    mounted
}

/// Bytes in the files under `dir` (walked; at most 100,000 entries, the
/// rest is not counted).
pub(super) fn directory_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 100_000 {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}
