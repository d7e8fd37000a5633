//! Moving files to and from the places where runtimes run.
//!
//! Two services, both working over any [`Shell`] (its command channel is
//! the transport, so nothing but `sh`, `cat`, `tar` and `find` is needed on
//! the other side):
//!
//! * [`ship_binary`]: puts the application's binary on a host, addressed by
//!   content (`$HOME/.cache/actogrid/bin/<sha256>/<name>`), so a host that
//!   already has this build is not sent it again.
//! * [`deploy`] and [`retrieve`]: the `fileTransfer` entries of a
//!   descriptor, pushed before the runtimes start and pulled back at the end.
//!
//! Everything sent passes through memory (a shell's standard input is a
//! byte slice): fine for binaries and input files of a few hundred
//! megabytes, not for data sets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use actogrid_descriptor::model::{FileTransfer, ProcessFileTransfer};
use sha2::{Digest, Sha256};

use crate::exec::{ExecError, LocalShell, Shell, quote};

/// What [`ship_binary`] did to get the binary there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipAction {
    /// The shell is this machine: the local path is used as it is.
    Local,
    /// The binary was sent, then its checksum verified on the host.
    Uploaded,
    /// The host already had it (executable, checksum verified).
    Present,
    /// Shipped or verified earlier by this process: nothing was asked.
    Known,
}

/// Where a shipped binary is on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedBinary {
    /// Absolute path on the host, ready to be executed.
    pub path: String,
    /// sha256 of the content, hexadecimal (`None` for [`ShipAction::Local`]).
    pub sha256: Option<String>,
    /// What was done.
    pub action: ShipAction,
}

/// Makes the local binary `local` available on `shell`'s host and returns
/// its path there.
///
/// A shell whose host is `localhost` is this machine: the (absolute) local
/// path is returned unchanged. Elsewhere the binary goes to
/// `$HOME/.cache/actogrid/bin/<sha256>/<file name>`: when a file is already
/// there, executable and with the right checksum (checked once per host in
/// this process), nothing is sent; otherwise the content is streamed
/// through the shell into a temporary file, made executable, checked and
/// renamed into place, so that a concurrent shipper on the same host never
/// runs half a file. Within this process, concurrent calls for the same
/// host and content wait for one another instead of uploading twice.
///
/// The local file's hash is computed once per path, size and modification
/// time.
pub async fn ship_binary(shell: &dyn Shell, local: &Path) -> Result<ShippedBinary, ExecError> {
    let host = shell.host().to_owned();
    let local_error = |detail: String| ExecError::Command {
        host: host.clone(),
        detail,
    };
    if host == "localhost" {
        let path = std::path::absolute(local).unwrap_or_else(|_| local.to_path_buf());
        return Ok(ShippedBinary {
            path: path.to_string_lossy().into_owned(),
            sha256: None,
            action: ShipAction::Local,
        });
    }
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| local_error(format!("{}: not a file name", local.display())))?;
    let digest = local_digest(local)
        .await
        .map_err(|e| local_error(format!("cannot read the binary {}: {e}", local.display())))?;

    let cell = {
        static SHIPPED: OnceLock<Mutex<ShipCells>> = OnceLock::new();
        let mut cells = SHIPPED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            cells
                .entry((host.clone(), digest.sha256.clone(), name.clone()))
                .or_default(),
        )
    };
    let mut action = ShipAction::Known;
    let path = cell
        .get_or_try_init(|| async {
            let (path, done) = ship_now(shell, local, &name, &digest).await?;
            action = done;
            Ok::<_, ExecError>(path)
        })
        .await?
        .clone();
    Ok(ShippedBinary {
        path,
        sha256: Some(digest.sha256),
        action,
    })
}

/// sha256 (hexadecimal) and size of the file at `path`, computed once per
/// path, size and modification time in this process: what a binary is
/// addressed by in the caches of hosts and peers.
pub async fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    local_digest(path).await.map(|d| (d.sha256, d.len))
}

/// An incremental sha256, for content that arrives in pieces.
#[derive(Debug, Default, Clone)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest, hexadecimal.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

type ShipCells = HashMap<(String, String, String), Arc<tokio::sync::OnceCell<String>>>;

/// A local file's content hash and size.
#[derive(Debug, Clone)]
struct Digest256 {
    sha256: String,
    len: u64,
}

/// The hash of `path`, from the cache when its size and time are unchanged.
async fn local_digest(path: &Path) -> std::io::Result<Digest256> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static HASHES: OnceLock<Mutex<HashMap<Key, Arc<tokio::sync::OnceCell<Digest256>>>>> =
        OnceLock::new();
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let key = (
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        meta.len(),
        meta.modified().ok(),
    );
    let cell = {
        let mut map = HASHES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key).or_default())
    };
    let owned = path.to_path_buf();
    cell.get_or_try_init(|| async move {
        tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .map_err(std::io::Error::other)?
    })
    .await
    .cloned()
}

fn hash_file(path: &Path) -> std::io::Result<Digest256> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Digest256 {
        sha256: hex(&hasher.finalize()),
        len,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The content of `path`, shared by the uploads that run at the same time
/// (64 hosts at once hold one copy, not 64).
async fn shared_content(path: &Path, sha256: &str) -> std::io::Result<Arc<Vec<u8>>> {
    static CONTENT: OnceLock<Mutex<HashMap<String, Weak<Vec<u8>>>>> = OnceLock::new();
    let map = CONTENT.get_or_init(Default::default);
    if let Some(bytes) = map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(sha256)
        .and_then(Weak::upgrade)
    {
        return Ok(bytes);
    }
    let bytes = Arc::new(tokio::fs::read(path).await?);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(sha256.to_owned(), Arc::downgrade(&bytes));
    Ok(bytes)
}

/// Shell code that sets `s` to the sha256 of file `$1`-like word `file`
/// (empty when the host has no tool for it).
fn sha_of(file: &str) -> String {
    format!(
        "s=$( (sha256sum {file} 2>/dev/null || shasum -a 256 {file} 2>/dev/null) | cut -d' ' -f1)"
    )
}

async fn ship_now(
    shell: &dyn Shell,
    local: &Path,
    name: &str,
    digest: &Digest256,
) -> Result<(String, ShipAction), ExecError> {
    let host = shell.host();
    let hash = &digest.sha256;
    let setup = format!(
        "[ -n \"$HOME\" ] || {{ echo 'HOME is not set' >&2; exit 1; }}\n\
         d=\"$HOME/.cache/actogrid/bin/{hash}\"; f=\"$d\"/{name}\n",
        name = quote(name)
    );
    let probe = format!(
        "{setup}if [ -f \"$f\" ] && [ -x \"$f\" ]; then\n\
         {sha}\n\
         n=$(wc -c < \"$f\" | tr -d ' ')\n\
         if [ \"$n\" = {len} ] && {{ [ -z \"$s\" ] || [ \"$s\" = {hash} ]; }}; then echo \"present $f\"; exit 0; fi\n\
         fi\n\
         echo \"missing $f\"\n",
        sha = sha_of("\"$f\""),
        len = digest.len,
    );
    let out = shell
        .run(&probe, None)
        .await?
        .check(host, "looking for the shipped binary")?;
    let answer = out.stdout_text();
    let (state, path) = answer.split_once(' ').unwrap_or(("", ""));
    if state == "present" && !path.is_empty() {
        return Ok((path.to_owned(), ShipAction::Present));
    }

    let bytes = shared_content(local, hash)
        .await
        .map_err(|e| ExecError::Command {
            host: host.to_owned(),
            detail: format!("cannot read the binary {}: {e}", local.display()),
        })?;
    let upload = format!(
        "{setup}t=\"$d/.upload.$$\"\n\
         mkdir -p \"$d\" && cat > \"$t\" && chmod 755 \"$t\" || {{ rm -f \"$t\"; exit 1; }}\n\
         {sha}\n\
         n=$(wc -c < \"$t\" | tr -d ' ')\n\
         if [ \"$n\" != {len} ]; then rm -f \"$t\"; echo \"received $n bytes of {len}\" >&2; exit 1; fi\n\
         if [ -n \"$s\" ] && [ \"$s\" != {hash} ]; then rm -f \"$t\"; echo \"checksum mismatch: got $s\" >&2; exit 1; fi\n\
         mv -f \"$t\" \"$f\" && echo \"$f\"\n",
        sha = sha_of("\"$t\""),
        len = digest.len,
    );
    let out = shell
        .run(&upload, Some(&bytes))
        .await?
        .check(host, &format!("uploading {}", local.display()))?;
    let path = out.stdout_text();
    if path.is_empty() {
        return Err(ExecError::Command {
            host: host.to_owned(),
            detail: format!("uploading {}: no path reported", local.display()),
        });
    }
    Ok((path, ShipAction::Uploaded))
}

/// What a file transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// The host files were sent to ([`deploy`]) or taken from ([`retrieve`]).
    pub host: String,
    /// One item per `file` or `dir` entry, in descriptor order.
    pub items: Vec<TransferredItem>,
}

impl TransferReport {
    /// Number of files moved.
    pub fn files(&self) -> usize {
        self.items.iter().map(|i| i.files).sum()
    }

    /// Bytes sent through the channel (file contents, or tar archives).
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }
}

/// One `file` or `dir` entry of a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferredItem {
    /// Source path, prefix applied (`~/` for a remote home).
    pub src: String,
    /// Destination path, prefix applied (`~/` for a remote home).
    pub dest: String,
    /// `true` for a `dir` entry.
    pub dir: bool,
    /// Files moved (for a `dir`, those left by includes and excludes).
    pub files: usize,
    /// Bytes sent.
    pub bytes: u64,
}

/// One side of a transfer: a shell, and how its relative paths resolve.
struct Side<'a> {
    shell: &'a dyn Shell,
    /// Relative paths without a prefix resolve against `$HOME` (the
    /// remote side) instead of the working directory (this machine).
    home_relative: bool,
    prefix: Option<&'a str>,
}

impl Side<'_> {
    /// The path with the prefix applied, as shown in reports.
    fn display(&self, path: &str) -> String {
        let joined = join_prefix(self.prefix, path);
        if joined.starts_with('/') || joined.starts_with('~') || !self.home_relative {
            joined
        } else {
            format!("~/{joined}")
        }
    }

    /// The path as one shell word.
    fn word(&self, path: &str) -> String {
        let joined = join_prefix(self.prefix, path);
        if joined == "~" {
            return "\"$HOME\"".to_owned();
        }
        if let Some(rest) = joined.strip_prefix("~/") {
            return format!("\"$HOME\"/{}", quote(rest));
        }
        if joined.starts_with('/') || !self.home_relative {
            quote(&joined)
        } else {
            format!("\"$HOME\"/{}", quote(&joined))
        }
    }
}

fn join_prefix(prefix: Option<&str>, path: &str) -> String {
    match prefix.filter(|p| !p.is_empty()) {
        Some(p) if !path.starts_with('/') && !path.starts_with('~') => {
            format!(
                "{}/{}",
                p.trim_end_matches('/'),
                path.trim_start_matches("./")
            )
        }
        _ => path.to_owned(),
    }
}

/// Pushes the files and directories of `transfer` from this machine to
/// `shell`'s host, before the runtimes start.
///
/// `src` paths are local (relative ones against the source prefix, else the
/// working directory); `dest` paths are on the host (relative ones against
/// the destination prefix, else the remote `$HOME`). A `file` whose `dest`
/// is an existing directory goes into it; a `dir` is copied with tar,
/// keeping only the files that its includes select and its excludes do not
/// (globs: `*`, `?`, `[…]`, and `**` across directories; a pattern without
/// `/` matches any path component, one with `/` the path from the entry's
/// root; a pattern that matches a directory covers what is below it).
/// Errors name the file and the host.
pub async fn deploy(
    shell: &dyn Shell,
    transfer: &FileTransfer,
    refs: &ProcessFileTransfer,
) -> Result<TransferReport, ExecError> {
    check_destination(shell, refs);
    let local = LocalShell;
    let from = Side {
        shell: &local,
        home_relative: false,
        prefix: refs.source_prefix.as_deref(),
    };
    let to = Side {
        shell,
        home_relative: true,
        prefix: refs.destination_prefix.as_deref(),
    };
    copy(shell.host(), &from, &to, transfer).await
}

/// Pulls the files and directories of `transfer` back from `shell`'s host
/// to this machine, at the end of a deployment.
///
/// The mirror of [`deploy`]: `src` paths are on the host (against the source
/// prefix, else the remote `$HOME`), `dest` paths are local (against the
/// destination prefix, else the working directory).
pub async fn retrieve(
    shell: &dyn Shell,
    transfer: &FileTransfer,
    refs: &ProcessFileTransfer,
) -> Result<TransferReport, ExecError> {
    check_destination(shell, refs);
    let local = LocalShell;
    let from = Side {
        shell,
        home_relative: true,
        prefix: refs.source_prefix.as_deref(),
    };
    let to = Side {
        shell: &local,
        home_relative: false,
        prefix: refs.destination_prefix.as_deref(),
    };
    copy(shell.host(), &from, &to, transfer).await
}

/// The channel of the shell is always the transport: `destinationInfo`'s
/// host and user, and the copy protocols, only get a note when they differ.
fn check_destination(shell: &dyn Shell, refs: &ProcessFileTransfer) {
    if let Some(h) = refs
        .destination_hostname
        .as_deref()
        .filter(|h| *h != shell.host())
    {
        tracing::warn!(
            host = shell.host(),
            "file transfer {}: destinationInfo hostname {h} is ignored, files go through the process's own connection",
            refs.refid.value
        );
    }
    if refs.destination_username.is_some() {
        tracing::debug!(
            host = shell.host(),
            "file transfer {}: destinationInfo username is ignored (the process's login is used)",
            refs.refid.value
        );
    }
}

async fn copy(
    host: &str,
    from: &Side<'_>,
    to: &Side<'_>,
    transfer: &FileTransfer,
) -> Result<TransferReport, ExecError> {
    let mut report = TransferReport {
        host: host.to_owned(),
        items: Vec::new(),
    };
    for file in &transfer.files {
        let item = copy_file(host, from, to, &file.src, &file.dest).await?;
        report.items.push(item);
    }
    for dir in &transfer.dirs {
        let item = copy_dir(host, from, to, dir).await?;
        report.items.push(item);
    }
    Ok(report)
}

fn transfer_error(host: &str, what: String, err: ExecError) -> ExecError {
    match err {
        ExecError::Command { detail, .. } => ExecError::Command {
            host: host.to_owned(),
            detail: format!("{what}: {detail}"),
        },
        other => other,
    }
}

async fn copy_file(
    host: &str,
    from: &Side<'_>,
    to: &Side<'_>,
    src: &str,
    dest: &str,
) -> Result<TransferredItem, ExecError> {
    let what = format!(
        "copying file {} ({}) to {} ({})",
        from.display(src),
        from.shell.host(),
        to.display(dest),
        to.shell.host()
    );
    // One round trip: a mode byte (`x` executable, `-` not), then the content.
    let read = format!(
        "f={}; if [ -x \"$f\" ]; then printf x; else printf -; fi; exec cat -- \"$f\"",
        from.word(src)
    );
    let out = from
        .shell
        .run(&read, None)
        .await
        .and_then(|o| o.check(from.shell.host(), "reading"))
        .map_err(|e| transfer_error(host, what.clone(), e))?;
    let (mode, content) = out
        .stdout
        .split_first()
        .map_or((b'-', &[][..]), |(m, c)| (*m, c));
    let base = Path::new(src.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let write = format!(
        "f={dest}\n\
         if [ -d \"$f\" ]; then f=\"$f\"/{base}; fi\n\
         mkdir -p \"$(dirname -- \"$f\")\" || exit 1\n\
         t=\"$f.tmp.$$\"\n\
         cat > \"$t\" {chmod}&& mv -f \"$t\" \"$f\" || {{ rm -f \"$t\"; exit 1; }}\n",
        dest = to.word(dest),
        base = quote(&base),
        chmod = if mode == b'x' {
            "&& chmod +x \"$t\" "
        } else {
            ""
        },
    );
    to.shell
        .run(&write, Some(content))
        .await
        .and_then(|o| o.check(to.shell.host(), "writing"))
        .map_err(|e| transfer_error(host, what, e))?;
    Ok(TransferredItem {
        src: from.display(src),
        dest: to.display(dest),
        dir: false,
        files: 1,
        bytes: content.len() as u64,
    })
}

async fn copy_dir(
    host: &str,
    from: &Side<'_>,
    to: &Side<'_>,
    dir: &actogrid_descriptor::model::DirEntry,
) -> Result<TransferredItem, ExecError> {
    let what = format!(
        "copying directory {} ({}) to {} ({})",
        from.display(&dir.src),
        from.shell.host(),
        to.display(&dir.dest),
        to.shell.host()
    );
    let fail = |e: ExecError| transfer_error(host, what.clone(), e);
    let src = from.word(&dir.src);
    let listing = from
        .shell
        .run(&format!("cd -- {src} && find . ! -type d -print"), None)
        .await
        .and_then(|o| o.check(from.shell.host(), "listing"))
        .map_err(fail)?;
    let mut names = Vec::new();
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let rel = line.strip_prefix("./").unwrap_or(line);
        if !rel.is_empty() && selected(rel, &dir.includes, &dir.excludes) {
            names.push(format!("./{rel}"));
        }
    }
    names.sort();
    let dest = to.word(&dir.dest);
    if names.is_empty() {
        to.shell
            .run(&format!("mkdir -p -- {dest}"), None)
            .await
            .and_then(|o| o.check(to.shell.host(), "creating the directory"))
            .map_err(fail)?;
        return Ok(TransferredItem {
            src: from.display(&dir.src),
            dest: to.display(&dir.dest),
            dir: true,
            files: 0,
            bytes: 0,
        });
    }
    let mut list = names.join("\n");
    list.push('\n');
    let archive = from
        .shell
        .run(
            &format!("cd -- {src} && tar -cf - -T -"),
            Some(list.as_bytes()),
        )
        .await
        .and_then(|o| o.check(from.shell.host(), "archiving"))
        .map_err(fail)?;
    to.shell
        .run(
            &format!("mkdir -p -- {dest} && cd -- {dest} && tar -x -o -f -"),
            Some(&archive.stdout),
        )
        .await
        .and_then(|o| o.check(to.shell.host(), "extracting"))
        .map_err(fail)?;
    Ok(TransferredItem {
        src: from.display(&dir.src),
        dest: to.display(&dir.dest),
        dir: true,
        files: names.len(),
        bytes: archive.stdout.len() as u64,
    })
}

/// Whether the file at `rel` (relative to a `dir` entry) is transferred.
fn selected(rel: &str, includes: &[String], excludes: &[String]) -> bool {
    let included = includes.is_empty() || includes.iter().any(|p| covers(p, rel));
    included && !excludes.iter().any(|p| covers(p, rel))
}

/// Whether pattern `pattern` matches `rel` or one of its parent directories.
fn covers(pattern: &str, rel: &str) -> bool {
    let pattern = pattern.trim();
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
    if pattern.is_empty() {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    if pattern.contains('/') {
        // The path itself or any of its ancestors.
        let mut end = 0;
        loop {
            let next = rel[end..].find('/').map(|i| end + i);
            let prefix = &rel[..next.unwrap_or(rel.len())];
            if glob(&p, &prefix.chars().collect::<Vec<_>>()) {
                return true;
            }
            match next {
                Some(i) => end = i + 1,
                None => return false,
            }
        }
    } else {
        rel.split('/')
            .any(|c| glob(&p, &c.chars().collect::<Vec<_>>()))
    }
}

/// Glob matching: `*` and `?` within a path component, `**` across
/// components (`**/` also matches no directory at all), `[abc]`, `[a-z]`,
/// `[!…]`.
fn glob(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let mut rest = &p[2..];
            while rest.first() == Some(&'*') {
                rest = &rest[1..];
            }
            if let Some(after) = rest.strip_prefix(&['/']) {
                glob(after, t) || (0..t.len()).any(|i| t[i] == '/' && glob(after, &t[i + 1..]))
            } else {
                (0..=t.len()).any(|i| glob(rest, &t[i..]))
            }
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if glob(rest, &t[i..]) {
                    return true;
                }
                if i < t.len() && t[i] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|&c| c != '/') && glob(&p[1..], &t[1..]),
        Some('[') => match class(&p[1..]) {
            Some((set, len)) => {
                t.first().is_some_and(|&c| c != '/' && set.matches(c))
                    && glob(&p[1 + len..], &t[1..])
            }
            None => t.first() == Some(&'[') && glob(&p[1..], &t[1..]),
        },
        Some(&c) => t.first() == Some(&c) && glob(&p[1..], &t[1..]),
    }
}

struct CharClass {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl CharClass {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= c && c <= b) != self.negated
    }
}

/// Parses the class after `[`; returns it and how many chars it used
/// (through the closing `]`).
fn class(p: &[char]) -> Option<(CharClass, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == ']' && !first {
            return Some((CharClass { negated, ranges }, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, t: &str) -> bool {
        glob(
            &p.chars().collect::<Vec<_>>(),
            &t.chars().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn globs() {
        assert!(g("*.log", "a.log"));
        assert!(!g("*.log", "d/a.log"));
        assert!(g("**/*.log", "a.log"));
        assert!(g("**/*.log", "d/e/a.log"));
        assert!(g("d/**", "d/e/a"));
        assert!(g("?.[ch]", "x.c"));
        assert!(!g("?.[!ch]", "x.c"));
        assert!(g("[a-c]x", "bx"));
        assert!(g("[x", "[x"));
    }

    #[test]
    fn includes_and_excludes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(selected("a/b.txt", &[], &[]));
        assert!(!selected("a/b.log", &[], &s(&["*.log"])));
        assert!(!selected("build/x/y", &[], &s(&["build"])));
        assert!(selected("src/build.rs", &[], &s(&["build"])));
        assert!(!selected("a/tmp/x", &[], &s(&["a/tmp"])));
        assert!(selected("b/tmp/x", &[], &s(&["a/tmp"])));
        assert!(selected("x.txt", &s(&["*.txt"]), &[]));
        assert!(!selected("x.bin", &s(&["*.txt"]), &[]));
        assert!(selected("docs/x.bin", &s(&["docs"]), &[]));
    }

    #[test]
    fn paths_resolve_per_side() {
        let local = LocalShell;
        let remote = Side {
            shell: &local,
            home_relative: true,
            prefix: None,
        };
        assert_eq!(remote.word("in/a b"), "\"$HOME\"/'in/a b'");
        assert_eq!(remote.display("in"), "~/in");
        assert_eq!(remote.word("/abs"), "/abs");
        assert_eq!(remote.word("~/x"), "\"$HOME\"/x");
        let prefixed = Side {
            shell: &local,
            home_relative: true,
            prefix: Some("/data/"),
        };
        assert_eq!(prefixed.word("in"), "/data/in");
        let here = Side {
            shell: &local,
            home_relative: false,
            prefix: None,
        };
        assert_eq!(here.word("in"), "in");
    }

    #[tokio::test]
    async fn local_shipping_keeps_the_path() {
        let shipped = ship_binary(&LocalShell, Path::new("/bin/true"))
            .await
            .unwrap();
        assert_eq!(shipped.path, "/bin/true");
        assert_eq!(shipped.action, ShipAction::Local);
    }
}
