//! The tar → directory unpacker.
//!
//! Every entry is created relative to an fd of its parent directory. That fd is reached from
//! the layer root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) or, when that fails or is
//! unavailable, one component at a time with O_NOFOLLOW, so a symlink planted by an earlier
//! entry can never redirect a later write. The last parent fd is cached because tar streams
//! list siblings together.

use std::cmp::Reverse;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use tar::{EntryType, PaxExtensions};

use crate::path::{normalize, split};
use crate::reader::{TarEntry, TarReader};
use crate::remove::remove_tree_at;
use crate::{ArchiveError, UnpackOptions, UnpackStats, sys};

/// Buffer between the (decompressed) stream and the tar parser: headers are read 512 bytes at
/// a time, which would otherwise mean one decompressor call each.
const READ_BUF: usize = 128 << 10;
/// Copy buffer for file contents; large reads go straight through the BufReader.
const COPY_BUF: usize = 1 << 20;

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): meaningless for overlayfs.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

pub(crate) fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, ArchiveError> {
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dest)
        .map_err(|source| ArchiveError::Dest {
            path: dest.to_path_buf(),
            source,
        })?;
    let mut unpacker = Unpacker::new(OwnedFd::from(root), opts);
    let mut archive = TarReader::new(BufReader::with_capacity(READ_BUF, reader));
    let mut entries = 0u64;
    while let Some(entry) = archive.next_entry()? {
        unpacker.check_cancel()?;
        entries += 1;
        if entries > opts.max_entries {
            return Err(ArchiveError::Limit {
                what: "entries",
                limit: opts.max_entries,
            });
        }
        unpacker.entry(&entry, &mut archive)?;
    }
    unpacker.finish()?;
    // The tar end marker may be followed by padding up to the record size; a digest computed
    // around our reader must see every byte.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| ArchiveError::Read {
        entry: None,
        source,
    })?;
    Ok(unpacker.stats)
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: libc::timespec,
}

/// A directory whose final mode and mtime are applied after all entries: creating children
/// changes the mtime, and a read-only mode would block creating them when not root.
struct DirFixup {
    path: Vec<u8>,
    mode: u32,
    mtime: libc::timespec,
}

enum ResolveErr {
    /// A component is a symlink; holds the path up to and including it.
    Symlink(Vec<u8>),
    NotDir,
    Missing,
    Io(io::Error),
}

struct Unpacker<'o> {
    root: Rc<OwnedFd>,
    opts: &'o UnpackOptions,
    /// The entry name as written in the tar, for messages.
    raw: Vec<u8>,
    /// Normalised name of the current entry (taken out while an entry is processed).
    name: Vec<u8>,
    /// Last resolved parent directory.
    cached: Option<(Vec<u8>, Rc<OwnedFd>)>,
    dirs: Vec<DirFixup>,
    xattrs: Vec<(CString, Vec<u8>)>,
    buf: Vec<u8>,
    stats: UnpackStats,
    /// File data written so far, against `opts.max_bytes`.
    written: u64,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unsafe_entry(raw: &[u8], reason: impl Into<String>) -> ArchiveError {
    ArchiveError::UnsafeEntry {
        entry: lossy(raw),
        reason: reason.into(),
    }
}

fn io_err(raw: &[u8], op: &'static str, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        entry: lossy(raw),
        op,
        source,
    }
}

fn read_err(raw: &[u8], source: io::Error) -> ArchiveError {
    ArchiveError::Read {
        entry: Some(lossy(raw)),
        source,
    }
}

fn cstring(bytes: &[u8]) -> CString {
    // Normalised names never contain NUL (normalize rejects it).
    CString::new(bytes).expect("normalised names contain no NUL")
}

/// Parses a PAX time (`1700000000.123456789`, possibly negative) into a timespec.
fn parse_pax_time(value: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)? as i64;
        nsec += d * 10i64.pow(8 - i as u32);
    }
    let (tv_sec, tv_nsec) = if neg && nsec > 0 {
        (-secs - 1, 1_000_000_000 - nsec)
    } else if neg {
        (-secs, 0)
    } else {
        (secs, nsec)
    };
    Some(libc::timespec {
        tv_sec: tv_sec as libc::time_t,
        tv_nsec: tv_nsec as _,
    })
}

/// A numeric header field; an empty one (all NULs or spaces) reads as 0 like Go's archive/tar
/// does, since some image builders leave fields blank.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        other => other,
    }
}

fn parse_id(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

impl<'o> Unpacker<'o> {
    fn new(root: OwnedFd, opts: &'o UnpackOptions) -> Self {
        Unpacker {
            root: Rc::new(root),
            opts,
            raw: Vec::new(),
            name: Vec::new(),
            cached: None,
            dirs: Vec::new(),
            xattrs: Vec::new(),
            buf: vec![0; COPY_BUF],
            stats: UnpackStats::default(),
            written: 0,
        }
    }

    fn check_cancel(&self) -> Result<(), ArchiveError> {
        match &self.opts.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ArchiveError::Cancelled),
            _ => Ok(()),
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &TarEntry,
        data: &mut TarReader<R>,
    ) -> Result<(), ArchiveError> {
        self.raw.clear();
        self.raw.extend_from_slice(&entry.path);
        let mut name = std::mem::take(&mut self.name);
        let res = self.entry_inner(entry, data, &mut name);
        self.name = name;
        res
    }

    fn entry_inner<R: Read>(
        &mut self,
        entry: &TarEntry,
        data: &mut TarReader<R>,
        name: &mut Vec<u8>,
    ) -> Result<(), ArchiveError> {
        let mut kind = entry.kind();
        normalize(&self.raw, name).map_err(|reason| unsafe_entry(&self.raw, reason))?;
        if kind == EntryType::Regular && self.raw.ends_with(b"/") {
            // Pre-POSIX tars mark directories with a trailing slash only.
            kind = EntryType::Directory;
        }
        let meta = self.meta(entry)?;
        let (parent, base) = split(name);
        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, base, &meta);
        }
        if name.is_empty() {
            if kind == EntryType::Directory {
                // Like containerd: the layer root keeps the metadata the snapshotter gave it.
                return Ok(());
            }
            return Err(unsafe_entry(
                &self.raw,
                "would replace the layer directory itself",
            ));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, data, parent, base, &meta)
            }
            EntryType::Directory => self.dir(name, parent, base, &meta),
            EntryType::Symlink => self.symlink(entry, parent, base, &meta),
            EntryType::Link => self.hardlink(entry, name, parent, base),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(entry, kind, parent, base, &meta)
            }
            other => {
                tracing::warn!(
                    entry = %lossy(&self.raw),
                    kind = ?other,
                    "skipping layer entry of unknown type"
                );
                Ok(())
            }
        }
    }

    fn meta(&mut self, entry: &TarEntry) -> Result<Meta, ArchiveError> {
        let header = &entry.header;
        let old = header.as_old();
        let fields = (|| -> io::Result<(u32, u64, u64, u64)> {
            Ok((
                numeric(header.mode().map(u64::from), &old.mode)? as u32,
                numeric(header.uid(), &old.uid)?,
                numeric(header.gid(), &old.gid)?,
                numeric(header.mtime(), &old.mtime)?,
            ))
        })();
        let (mode, mut uid, mut gid, secs) = fields.map_err(|e| read_err(&self.raw, e))?;
        let mut mtime = libc::timespec {
            tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
            tv_nsec: 0,
        };
        self.xattrs.clear();
        if let Some(pax) = &entry.pax {
            for ext in PaxExtensions::new(pax) {
                let ext = ext.map_err(|e| read_err(&self.raw, e))?;
                let key = ext.key_bytes();
                if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr.starts_with(OVERLAY_XATTR_PREFIX) {
                        // overlayfs would obey these (redirect, metacopy, opaque); a layer may
                        // only express whiteouts and opaque dirs through `.wh.` entries.
                        tracing::warn!(
                            entry = %lossy(&self.raw),
                            xattr = %lossy(xattr),
                            "dropping overlayfs xattr from layer"
                        );
                        continue;
                    }
                    let xattr = CString::new(xattr).map_err(|_| {
                        unsafe_entry(&self.raw, "extended attribute name contains a NUL byte")
                    })?;
                    self.xattrs.push((xattr, ext.value_bytes().to_vec()));
                    continue;
                }
                match key {
                    b"mtime" => {
                        if let Some(ts) = parse_pax_time(ext.value_bytes()) {
                            mtime = ts;
                        }
                    }
                    b"uid" => uid = parse_id(ext.value_bytes()).unwrap_or(uid),
                    b"gid" => gid = parse_id(ext.value_bytes()).unwrap_or(gid),
                    _ => {}
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| unsafe_entry(&self.raw, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| unsafe_entry(&self.raw, "gid out of range"))?;
        Ok(Meta {
            mode: mode & 0o7777,
            uid,
            gid,
            mtime,
        })
    }

    /// Resolves directory `path` (normalised) beneath the root without following symlinks,
    /// creating missing components (mode 0755) when `create` is set.
    fn resolve(&mut self, path: &[u8], create: bool) -> Result<Rc<OwnedFd>, ResolveErr> {
        if path.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some((_, fd)) = self.cached.as_ref().filter(|(cached, _)| cached == path) {
            return Ok(fd.clone());
        }
        let fd = Rc::new(self.open_dir(path, create)?);
        match &mut self.cached {
            Some((cached, cached_fd)) => {
                cached.clear();
                cached.extend_from_slice(path);
                *cached_fd = fd.clone();
            }
            None => self.cached = Some((path.to_vec(), fd.clone())),
        }
        Ok(fd)
    }

    fn open_dir(&mut self, path: &[u8], create: bool) -> Result<OwnedFd, ResolveErr> {
        if let Some(Ok(fd)) = sys::openat2_dir_beneath(self.root.as_fd(), &cstring(path)) {
            return Ok(fd);
        }
        // Slow path: missing components, a symlink to report, or no openat2.
        let mut cur: Option<OwnedFd> = None;
        let mut end = 0;
        for comp in path.split(|b| *b == b'/') {
            end += comp.len();
            let c = cstring(comp);
            let dir = cur.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let next = match sys::open_dir_nofollow(dir, &c) {
                Ok(fd) => fd,
                Err(e) if is_errno(&e, libc::ENOENT) && create => {
                    match sys::mkdirat(dir, &c, 0o755) {
                        Ok(()) => self.stats.inodes += 1,
                        Err(e) if is_errno(&e, libc::EEXIST) => {}
                        Err(e) => return Err(ResolveErr::Io(e)),
                    }
                    let fd = sys::open_dir_nofollow(dir, &c)
                        .map_err(|e| classify(dir, &c, e, &path[..end]))?;
                    // mkdirat is subject to the umask; parents must be 0755 like containerd's.
                    sys::fchmod(fd.as_fd(), 0o755).map_err(ResolveErr::Io)?;
                    fd
                }
                Err(e) => return Err(classify(dir, &c, e, &path[..end])),
            };
            cur = Some(next);
            end += 1;
        }
        Ok(cur.expect("a non-empty path has a component"))
    }

    /// The parent directory of the current entry, created if missing.
    fn parent(&mut self, parent: &[u8]) -> Result<Rc<OwnedFd>, ArchiveError> {
        self.resolve(parent, true).map_err(|e| match e {
            ResolveErr::Symlink(at) => unsafe_entry(
                &self.raw,
                format!("writes through a symlink ({:?})", lossy(&at)),
            ),
            ResolveErr::NotDir => io_err(
                &self.raw,
                "open parent directory",
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ),
            ResolveErr::Missing => io_err(
                &self.raw,
                "open parent directory",
                io::Error::from_raw_os_error(libc::ENOENT),
            ),
            ResolveErr::Io(e) => io_err(&self.raw, "open parent directory", e),
        })
    }

    /// Removes whatever non-directory or directory tree sits at `name` so a later entry can
    /// take its place (tar semantics: the last entry with a name wins).
    fn clear_slot(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), ArchiveError> {
        match sys::unlinkat(dir, name, 0) {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) if is_errno(&e, libc::EISDIR) || is_errno(&e, libc::EPERM) => {
                // The cached parent may live inside the tree being removed.
                self.cached = None;
                remove_tree_at(dir, name).map_err(|e| io_err(&self.raw, "remove directory", e))
            }
            Err(e) => Err(io_err(&self.raw, "remove existing entry", e)),
        }
    }

    /// Runs `create` and, if the name is taken, clears it and runs `create` once more.
    fn create_replacing<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        op: &'static str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<T, ArchiveError> {
        match create() {
            Err(e) if is_errno(&e, libc::EEXIST) => {
                self.clear_slot(dir, name)?;
                create().map_err(|e| io_err(&self.raw, op, e))
            }
            other => other.map_err(|e| io_err(&self.raw, op, e)),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &TarEntry,
        data: &mut TarReader<R>,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let dir = self.parent(parent)?;
        let name = cstring(base);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = self.create_replacing(dir.as_fd(), &name, "create file", || {
            sys::openat(dir.as_fd(), &name, flags, 0o600)
        })?;
        self.stats.inodes += 1;
        let mut file = File::from(fd);
        match &entry.sparse {
            None => self.copy(data, &mut file, entry.size)?,
            Some(map) => {
                // Holes are seeked over, never written or scanned: a map of huge holes costs
                // nothing but the final size.
                for (off, len) in map {
                    file.seek(SeekFrom::Start(*off))
                        .map_err(|e| io_err(&self.raw, "write file", e))?;
                    self.copy(data, &mut file, *len)?;
                }
                file.set_len(entry.size)
                    .map_err(|e| io_err(&self.raw, "write file", e))?;
            }
        }
        self.stats.bytes += entry.size;
        self.chown_fd(file.as_fd(), meta)?;
        sys::fchmod(file.as_fd(), meta.mode).map_err(|e| io_err(&self.raw, "chmod", e))?;
        self.xattrs_fd(file.as_fd())?;
        sys::futimens(file.as_fd(), &meta.mtime).map_err(|e| io_err(&self.raw, "set times", e))
    }

    /// Copies `len` bytes of entry data into `file`, counting them against the layer's ceiling.
    fn copy<R: Read>(
        &mut self,
        src: &mut TarReader<R>,
        file: &mut File,
        len: u64,
    ) -> Result<(), ArchiveError> {
        let mut left = len;
        while left > 0 {
            self.check_cancel()?;
            let want = self.buf.len().min(left.min(usize::MAX as u64) as usize);
            let n = match src.read_data(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(&self.raw, e)),
            };
            if n == 0 {
                return Err(read_err(
                    &self.raw,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "layer stream ends inside the file",
                    ),
                ));
            }
            self.written += n as u64;
            if self.written > self.opts.max_bytes {
                return Err(ArchiveError::Limit {
                    what: "bytes of file data",
                    limit: self.opts.max_bytes,
                });
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| io_err(&self.raw, "write file", e))?;
            left -= n as u64;
        }
        Ok(())
    }

    fn dir(
        &mut self,
        name: &[u8],
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let dir = self.parent(parent)?;
        let cname = cstring(base);
        // Created owner-writable; the real mode is applied at the end (see DirFixup).
        match sys::mkdirat(dir.as_fd(), &cname, 0o700) {
            Ok(()) => self.stats.inodes += 1,
            Err(e) if is_errno(&e, libc::EEXIST) => {
                let st = sys::lstatat(dir.as_fd(), &cname)
                    .map_err(|e| io_err(&self.raw, "stat existing entry", e))?;
                // A directory over a directory only updates metadata.
                if !sys::is_dir(&st) {
                    self.clear_slot(dir.as_fd(), &cname)?;
                    sys::mkdirat(dir.as_fd(), &cname, 0o700)
                        .map_err(|e| io_err(&self.raw, "create directory", e))?;
                    self.stats.inodes += 1;
                }
            }
            Err(e) => return Err(io_err(&self.raw, "create directory", e)),
        }
        let fd = sys::open_dir_nofollow(dir.as_fd(), &cname)
            .map_err(|e| io_err(&self.raw, "open directory", e))?;
        self.chown_fd(fd.as_fd(), meta)?;
        self.xattrs_fd(fd.as_fd())?;
        self.dirs.push(DirFixup {
            path: name.to_vec(),
            mode: meta.mode,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        entry: &TarEntry,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        // Any target text is fine: it is only resolved inside the container, and nothing here
        // ever follows it.
        let target = match &entry.link {
            Some(t) if !t.is_empty() => CString::new(t.clone())
                .map_err(|_| unsafe_entry(&self.raw, "symlink target contains a NUL byte"))?,
            _ => return Err(unsafe_entry(&self.raw, "symlink has no target")),
        };
        let dir = self.parent(parent)?;
        let name = cstring(base);
        self.create_replacing(dir.as_fd(), &name, "create symlink", || {
            sys::symlinkat(&target, dir.as_fd(), &name)
        })?;
        self.stats.inodes += 1;
        self.finish_node(dir.as_fd(), &name, meta, false)
    }

    fn hardlink(
        &mut self,
        entry: &TarEntry,
        name: &[u8],
        parent: &[u8],
        base: &[u8],
    ) -> Result<(), ArchiveError> {
        let raw_target = match &entry.link {
            Some(t) => t.clone(),
            None => return Err(unsafe_entry(&self.raw, "hard link has no target")),
        };
        let shown = lossy(&raw_target);
        let mut target = Vec::new();
        normalize(&raw_target, &mut target).map_err(|reason| {
            unsafe_entry(&self.raw, format!("hard link target {shown:?}: {reason}"))
        })?;
        if target.is_empty() {
            return Err(unsafe_entry(
                &self.raw,
                format!("hard link target {shown:?} is the layer directory"),
            ));
        }
        if target == name {
            // A link to itself changes nothing.
            return Ok(());
        }
        let (tparent, tbase) = split(&target);
        let tdir = self.resolve(tparent, false).map_err(|e| match e {
            ResolveErr::Symlink(_) => unsafe_entry(
                &self.raw,
                format!("hard link target {shown:?} is reached through a symlink"),
            ),
            ResolveErr::Missing | ResolveErr::NotDir => unsafe_entry(
                &self.raw,
                format!("hard link target {shown:?} does not exist in the layer"),
            ),
            ResolveErr::Io(e) => io_err(&self.raw, "open hard link target directory", e),
        })?;
        let tname = cstring(tbase);
        match sys::lstatat(tdir.as_fd(), &tname) {
            Ok(st) if sys::is_dir(&st) => {
                return Err(unsafe_entry(
                    &self.raw,
                    format!("hard link target {shown:?} is a directory"),
                ));
            }
            Ok(_) => {}
            Err(e) if is_errno(&e, libc::ENOENT) => {
                return Err(unsafe_entry(
                    &self.raw,
                    format!("hard link target {shown:?} does not exist in the layer"),
                ));
            }
            Err(e) => return Err(io_err(&self.raw, "stat hard link target", e)),
        }
        let dir = self.parent(parent)?;
        let cname = cstring(base);
        self.create_replacing(dir.as_fd(), &cname, "create hard link", || {
            sys::linkat(tdir.as_fd(), &tname, dir.as_fd(), &cname)
        })?;
        // The metadata belongs to the shared inode, already set by the target's entry.
        self.stats.inodes += 1;
        Ok(())
    }

    fn special(
        &mut self,
        entry: &TarEntry,
        kind: EntryType,
        parent: &[u8],
        base: &[u8],
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        let header = &entry.header;
        // FIFOs carry no device number, and writers often leave those fields blank.
        let devnum = if matches!(kind, EntryType::Char | EntryType::Block) {
            (|| -> io::Result<libc::dev_t> {
                let (raw_major, raw_minor) = match header.as_ustar() {
                    Some(u) => (u.dev_major.to_vec(), u.dev_minor.to_vec()),
                    None => match header.as_gnu() {
                        Some(g) => (g.dev_major.to_vec(), g.dev_minor.to_vec()),
                        None => (Vec::new(), Vec::new()),
                    },
                };
                let major = numeric(
                    header.device_major().map(|m| m.unwrap_or(0).into()),
                    &raw_major,
                )?;
                let minor = numeric(
                    header.device_minor().map(|m| m.unwrap_or(0).into()),
                    &raw_minor,
                )?;
                Ok(sys::makedev(major as u32, minor as u32))
            })()
            .map_err(|e| read_err(&self.raw, e))?
        } else {
            0
        };
        let (fmt, dev) = match kind {
            EntryType::Char => (libc::S_IFCHR, devnum),
            EntryType::Block => (libc::S_IFBLK, devnum),
            _ => (libc::S_IFIFO, 0),
        };
        let dir = self.parent(parent)?;
        let name = cstring(base);
        let created = self.create_replacing(dir.as_fd(), &name, "create device node", || {
            sys::mknodat(dir.as_fd(), &name, fmt | 0o600, dev)
        });
        match created {
            Ok(()) => {}
            // Without CAP_MKNOD (rootless) devices cannot exist; containerd skips them too.
            Err(ArchiveError::Io { source, .. })
                if fmt != libc::S_IFIFO
                    && !self.opts.same_owner
                    && is_errno(&source, libc::EPERM) =>
            {
                tracing::warn!(entry = %lossy(&self.raw), "skipping device node: not permitted");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.stats.inodes += 1;
        self.finish_node(dir.as_fd(), &name, meta, true)
    }

    /// Owner, mode, xattrs and times of a node that has no fd of its own (symlink, device).
    fn finish_node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), ArchiveError> {
        if self.opts.same_owner {
            sys::lchownat(dir, name, meta.uid, meta.gid)
                .map_err(|e| io_err(&self.raw, "chown", e))?;
        }
        if chmod {
            // The node was just created by us as a non-symlink, so following is not a concern.
            sys::fchmodat(dir, name, meta.mode).map_err(|e| io_err(&self.raw, "chmod", e))?;
        }
        if !self.xattrs.is_empty() {
            // No lsetxattrat before Linux 6.13: go through the parent's fd in /proc, which
            // resolves to that exact directory; the final component is not followed.
            let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            path.extend_from_slice(name.to_bytes());
            let path = CString::new(path).expect("no NUL in the path");
            for (key, value) in &self.xattrs {
                if let Err(e) = sys::lsetxattr(&path, key, value) {
                    tolerate_xattr(&self.raw, key, e)?;
                }
            }
        }
        sys::lutimensat(dir, name, &meta.mtime).map_err(|e| io_err(&self.raw, "set times", e))
    }

    fn chown_fd(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), ArchiveError> {
        if self.opts.same_owner {
            sys::fchown(fd, meta.uid, meta.gid).map_err(|e| io_err(&self.raw, "chown", e))?;
        }
        Ok(())
    }

    /// Applied after chown: chown drops `security.capability`.
    fn xattrs_fd(&self, fd: BorrowedFd<'_>) -> Result<(), ArchiveError> {
        for (key, value) in &self.xattrs {
            if let Err(e) = sys::fsetxattr(fd, key, value) {
                tolerate_xattr(&self.raw, key, e)?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &[u8], base: &[u8], meta: &Meta) -> Result<(), ArchiveError> {
        if base == OPAQUE_MARKER {
            let dir = self.parent(parent)?;
            sys::fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(|e| io_err(&self.raw, "mark directory opaque", e))?;
            return Ok(());
        }
        if base.starts_with(AUFS_META_PREFIX) {
            tracing::debug!(entry = %lossy(&self.raw), "ignoring aufs metadata");
            return Ok(());
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(unsafe_entry(
                &self.raw,
                "whiteout does not name an entry inside its directory",
            ));
        }
        let dir = self.parent(parent)?;
        let name = cstring(target);
        // overlayfs represents a deleted entry as a 0/0 character device.
        self.create_replacing(dir.as_fd(), &name, "create whiteout", || {
            sys::mknodat(dir.as_fd(), &name, libc::S_IFCHR, 0)
        })?;
        self.stats.inodes += 1;
        if self.opts.same_owner {
            sys::lchownat(dir.as_fd(), &name, meta.uid, meta.gid)
                .map_err(|e| io_err(&self.raw, "chown", e))?;
        }
        Ok(())
    }

    /// Applies directory modes and mtimes, deepest first so a parent's mtime is set after its
    /// children stop changing it.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable: when a directory appears twice, its later entry is applied last and wins.
        dirs.sort_by_key(|d| Reverse(d.path.iter().filter(|b| **b == b'/').count()));
        for d in &dirs {
            let fd = match self.resolve(&d.path, false) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry: nothing to fix.
                Err(ResolveErr::Missing | ResolveErr::NotDir | ResolveErr::Symlink(_)) => continue,
                Err(ResolveErr::Io(e)) => return Err(io_err(&d.path, "open directory", e)),
            };
            sys::fchmod(fd.as_fd(), d.mode).map_err(|e| io_err(&d.path, "chmod", e))?;
            sys::futimens(fd.as_fd(), &d.mtime).map_err(|e| io_err(&d.path, "set times", e))?;
        }
        self.cached = None;
        Ok(())
    }
}

/// Classifies why `name` in `dir` could not be opened as a directory.
fn classify(dir: BorrowedFd<'_>, name: &CStr, err: io::Error, so_far: &[u8]) -> ResolveErr {
    match sys::lstatat(dir, name) {
        Ok(st) if sys::is_symlink(&st) => ResolveErr::Symlink(so_far.to_vec()),
        Ok(st) if !sys::is_dir(&st) => ResolveErr::NotDir,
        Err(e) if is_errno(&e, libc::ENOENT) => ResolveErr::Missing,
        _ => ResolveErr::Io(err),
    }
}

/// Filesystems without support for a `security.*` attribute (SELinux labels from the build
/// host, say) must not fail the pull; every other xattr failure does.
fn tolerate_xattr(raw: &[u8], key: &CStr, err: io::Error) -> Result<(), ArchiveError> {
    if key.to_bytes().starts_with(b"security.") && is_errno(&err, libc::EOPNOTSUPP) {
        tracing::warn!(entry = %lossy(raw), xattr = ?key, "skipping unsupported xattr");
        return Ok(());
    }
    Err(io_err(raw, "set xattr", err))
}
