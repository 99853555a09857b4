//! Unpack tests. They build tars in memory with raw headers (the tar crate's Builder refuses
//! hostile names). Device nodes, chown and `trusted.*` xattrs need root; CI runs them as root.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crius_error::{ErrorKind, HasKind};
use tar::{EntryType, Header};

use crate::{
    ArchiveError, Compression, UnpackOptions, UnpackStats, decompress, remove_tree, unpack,
};

const MTIME: u64 = 1_600_000_000;

/// One tar member, written with a raw header.
struct E {
    name: String,
    kind: u8,
    link: String,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
}

impl E {
    fn new(name: &str, kind: u8) -> E {
        E {
            name: name.to_string(),
            kind,
            link: String::new(),
            data: Vec::new(),
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: MTIME,
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    fn file(name: &str, data: &[u8]) -> E {
        let mut e = E::new(name, b'0');
        e.data = data.to_vec();
        e
    }
    fn dir(name: &str) -> E {
        E::new(name, b'5')
    }
    fn symlink(name: &str, target: &str) -> E {
        let mut e = E::new(name, b'2');
        e.link = target.to_string();
        e
    }
    fn hardlink(name: &str, target: &str) -> E {
        let mut e = E::new(name, b'1');
        e.link = target.to_string();
        e
    }
    fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    fn mtime(mut self, mtime: u64) -> E {
        self.mtime = mtime;
        self
    }
    fn pax(mut self, key: &str, value: &[u8]) -> E {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
}

#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn member(&mut self, name: &[u8], kind: u8, link: &[u8], data: &[u8], e: Option<&E>) {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(EntryType::new(kind));
        h.set_size(data.len() as u64);
        h.set_mode(e.map_or(0o644, |e| e.mode));
        h.set_uid(e.map_or(0, |e| e.uid));
        h.set_gid(e.map_or(0, |e| e.gid));
        h.set_mtime(e.map_or(MTIME, |e| e.mtime));
        if let Some(e) = e {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    fn push(&mut self, e: E) -> &mut Tar {
        if !e.pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &e.pax {
                // "<len> <key>=<value>\n" where len counts itself.
                let body = 3 + k.len() + v.len();
                let mut len = body + 1;
                while len.to_string().len() + body != len {
                    len = len.to_string().len() + body;
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            self.member(b"PaxHeader", b'x', b"", &records, None);
        }
        self.member(
            e.name.as_bytes(),
            e.kind,
            e.link.as_bytes(),
            &e.data,
            Some(&e),
        );
        self
    }

    fn build(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

fn tar_of(entries: Vec<E>) -> Vec<u8> {
    let mut t = Tar::default();
    for e in entries {
        t.push(e);
    }
    t.build()
}

/// A temp dir holding `dest/` (the layer directory) and a sentinel sibling.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("dest")).unwrap();
        fs::write(tmp.path().join("sentinel"), b"keep").unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        Sandbox { tmp }
    }
    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dest().join(rel)
    }
    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, ArchiveError> {
        unpack(Cursor::new(tar), &self.dest(), &root_opts())
    }
    /// Everything in the sandbox except `dest/`, with the metadata a stray write would change.
    fn outside(&self) -> BTreeMap<PathBuf, (u32, u64, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        walk(self.tmp.path(), &self.dest(), &mut out);
        out
    }
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, i64, Vec<u8>)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path == skip {
            continue;
        }
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            path.clone(),
            (meta.mode(), meta.nlink(), meta.mtime(), content),
        );
        if meta.is_dir() {
            walk(&path, skip, out);
        }
    }
}

fn root_opts() -> UnpackOptions {
    UnpackOptions::new(is_root())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn lgetxattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the length passed.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Unpacks a hostile tar and checks the error names `entry` and nothing outside changed.
fn assert_rejected(entries: Vec<E>, entry: &str) -> ArchiveError {
    let sb = Sandbox::new();
    let before = sb.outside();
    let err = sb
        .unpack(&tar_of(entries))
        .expect_err("hostile layer must fail");
    match &err {
        ArchiveError::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
        other => panic!("expected UnsafeEntry for {entry:?}, got {other}"),
    }
    assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(sb.outside(), before, "something was written outside dest");
    assert!(!Path::new("/etc/crius-archive-test").exists());
    err
}

#[test]
fn unpacks_files_dirs_and_metadata() {
    let sb = Sandbox::new();
    let stats = sb
        .unpack(&tar_of(vec![
            E::dir("./"),
            E::dir("./etc/").mode(0o750).mtime(1_500_000_000),
            E::file("./etc/conf", b"hello")
                .mode(0o640)
                .owner(1234, 5678),
            E::file("etc/suid", b"x").mode(0o4755).owner(1000, 1000),
            E::dir("tmp").mode(0o1777),
            E::file("etc/attrs", b"")
                .pax("SCHILY.xattr.user.test", b"value")
                .pax("mtime", b"1600000000.5"),
            E::symlink("etc/link", "../nowhere/at/all"),
            E::hardlink("etc/hard", "etc/conf"),
        ]))
        .unwrap();
    assert_eq!(stats.bytes, 6);
    assert_eq!(stats.inodes, 7);

    let conf = fs::metadata(sb.path("etc/conf")).unwrap();
    assert_eq!(fs::read(sb.path("etc/conf")).unwrap(), b"hello");
    assert_eq!(conf.mode() & 0o7777, 0o640);
    assert_eq!(conf.mtime(), MTIME as i64);
    assert_eq!(conf.atime(), MTIME as i64);
    assert_eq!(conf.nlink(), 2);
    if is_root() {
        assert_eq!((conf.uid(), conf.gid()), (1234, 5678));
        let suid = fs::metadata(sb.path("etc/suid")).unwrap();
        assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
        // chmod after chown, or the setuid bit would be lost.
        assert_eq!(suid.mode() & 0o7777, 0o4755);
    }
    let etc = fs::metadata(sb.path("etc")).unwrap();
    assert_eq!(etc.mode() & 0o7777, 0o750);
    // Applied after the children were created.
    assert_eq!(etc.mtime(), 1_500_000_000);
    assert_eq!(
        fs::metadata(sb.path("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );

    let attrs = fs::metadata(sb.path("etc/attrs")).unwrap();
    assert_eq!(attrs.mtime_nsec(), 500_000_000);
    assert_eq!(
        lgetxattr(&sb.path("etc/attrs"), "user.test").as_deref(),
        Some(&b"value"[..])
    );

    let link = sb.path("etc/link");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(&link).unwrap(),
        PathBuf::from("../nowhere/at/all")
    );
    assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), MTIME as i64);
    assert_eq!(fs::metadata(sb.path("etc/hard")).unwrap().ino(), conf.ino());
}

#[test]
fn unpacks_devices_and_fifos() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let mut null = E::new("dev/null", b'3').mode(0o666);
    null.dev = (1, 3);
    let mut loop0 = E::new("dev/loop0", b'4').mode(0o660).owner(0, 6);
    loop0.dev = (7, 0);
    sb.unpack(&tar_of(vec![
        null,
        loop0,
        E::new("run/fifo", b'6')
            .mode(0o600)
            .pax("SCHILY.xattr.trusted.fifo", b"f"),
        E::symlink("run/link", "/etc/passwd").pax("SCHILY.xattr.trusted.link", b"l"),
    ]))
    .unwrap();
    let m = fs::symlink_metadata(sb.path("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), libc::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
    let m = fs::symlink_metadata(sb.path("dev/loop0")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), libc::makedev(7, 0));
    assert_eq!(m.gid(), 6);
    let m = fs::symlink_metadata(sb.path("run/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mtime(), MTIME as i64);
    // Xattrs of nodes without an fd of their own land on the node, not a symlink's target.
    assert_eq!(
        lgetxattr(&sb.path("run/fifo"), "trusted.fifo").as_deref(),
        Some(&b"f"[..])
    );
    assert_eq!(
        lgetxattr(&sb.path("run/link"), "trusted.link").as_deref(),
        Some(&b"l"[..])
    );
    assert_eq!(lgetxattr(Path::new("/etc/passwd"), "trusted.link"), None);
    // Implicit parents are 0755 like containerd's.
    assert_eq!(fs::metadata(sb.path("run")).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::dir("usr"),
        E::file("usr/.wh.gone", b""),
        E::file("opt/app/.wh..wh..opq", b""),
        E::file("usr/.wh..wh.plnk", b""),
        E::file(".wh.toplevel", b""),
    ]))
    .unwrap();
    for name in ["usr/gone", "toplevel"] {
        let m = fs::symlink_metadata(sb.path(name)).unwrap();
        assert!(m.file_type().is_char_device(), "{name}");
        assert_eq!(m.rdev(), 0);
    }
    assert!(!sb.path("usr/.wh.gone").exists());
    assert!(fs::symlink_metadata(sb.path("usr/.wh..wh.plnk")).is_err());
    assert!(fs::symlink_metadata(sb.path("usr/plnk")).is_err());
    assert_eq!(
        lgetxattr(&sb.path("opt/app"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!sb.path("opt/app/.wh..wh..opq").exists());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::file("a", b"first"),
        E::file("a", b"second"),
        E::dir("d").mode(0o700),
        E::file("d/child", b"x"),
        E::dir("d").mode(0o711),
        E::dir("f"),
        E::file("f/inner/deep", b"x"),
        E::file("f", b"now a file"),
        E::file("s", b"file"),
        E::symlink("s", "/target"),
        E::symlink("t", "/target"),
        E::dir("t"),
    ]))
    .unwrap();
    assert_eq!(fs::read(sb.path("a")).unwrap(), b"second");
    // A directory over a directory keeps its content and takes the new metadata.
    assert!(sb.path("d/child").exists());
    assert_eq!(fs::metadata(sb.path("d")).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(fs::read(sb.path("f")).unwrap(), b"now a file");
    assert_eq!(
        fs::read_link(sb.path("s")).unwrap(),
        PathBuf::from("/target")
    );
    assert!(fs::symlink_metadata(sb.path("t")).unwrap().is_dir());
}

#[test]
fn handles_gnu_long_names_from_the_tar_builder() {
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/file", "d".repeat(150));
    let mut h = Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "longlink", "x".repeat(200)).unwrap();
    let sb = Sandbox::new();
    sb.unpack(&b.into_inner().unwrap()).unwrap();
    assert_eq!(fs::read(sb.path(&long)).unwrap(), b"abc");
    assert_eq!(
        fs::read_link(sb.path("longlink"))
            .unwrap()
            .as_os_str()
            .len(),
        200
    );
}

#[test]
fn skips_unknown_entry_types() {
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![E::new("weird", b'Z'), E::file("ok", b"1")]))
        .unwrap();
    assert!(!sb.path("weird").exists());
    assert!(sb.path("ok").exists());
}

#[test]
fn rejects_path_traversal() {
    assert_rejected(vec![E::file("../x", b"pwned")], "../x");
    assert_rejected(vec![E::file("a/../../x", b"pwned")], "a/../../x");
    assert_rejected(vec![E::dir("./../outside/d")], "./../outside/d");
    let err = assert_rejected(
        vec![E::file("/etc/crius-archive-test", b"x")],
        "/etc/crius-archive-test",
    );
    assert!(err.to_string().contains("absolute"), "{err}");
    let err = assert_rejected(
        vec![E::file("ok", b""), E::file("../../etc/passwd", b"x")],
        "../../etc/passwd",
    );
    assert_eq!(
        err.to_string(),
        r#"layer entry "../../etc/passwd": path escapes the layer directory"#
    );
}

#[test]
fn never_writes_through_symlinks() {
    let err = assert_rejected(
        vec![
            E::symlink("link", "/etc"),
            E::file("link/crius-archive-test", b"pwned"),
        ],
        "link/crius-archive-test",
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_rejected(
        vec![E::symlink("link", "../.."), E::file("link/x", b"pwned")],
        "link/x",
    );
    assert_rejected(
        vec![E::symlink("up", ".."), E::file("up/sentinel", b"pwned")],
        "up/sentinel",
    );
    assert_rejected(
        vec![E::symlink("up", ".."), E::dir("up/outside/newdir")],
        "up/outside/newdir",
    );
    // A deeper component, and a symlink that points inside dest: still refused.
    assert_rejected(
        vec![
            E::dir("a"),
            E::symlink("a/b", "../../outside"),
            E::file("a/b/c/d", b"pwned"),
        ],
        "a/b/c/d",
    );
    assert_rejected(
        vec![
            E::dir("real"),
            E::symlink("alias", "real"),
            E::file("alias/f", b"x"),
        ],
        "alias/f",
    );
    // Whiteouts and opaque markers are writes too.
    assert_rejected(
        vec![E::symlink("up", ".."), E::file("up/.wh.sentinel", b"")],
        "up/.wh.sentinel",
    );
    assert_rejected(
        vec![
            E::symlink("up", ".."),
            E::file("up/outside/.wh..wh..opq", b""),
        ],
        "up/outside/.wh..wh..opq",
    );
    // Replacing the symlink itself is fine (it is unlinked, not followed).
    let sb = Sandbox::new();
    let before = sb.outside();
    sb.unpack(&tar_of(vec![
        E::symlink("up", ".."),
        E::file("up", b"now a file"),
    ]))
    .unwrap();
    assert_eq!(fs::read(sb.path("up")).unwrap(), b"now a file");
    assert_eq!(sb.outside(), before);
}

#[test]
fn rejects_hardlink_escapes() {
    let err = assert_rejected(vec![E::hardlink("hl", "../../etc/passwd")], "hl");
    assert!(err.to_string().contains("../../etc/passwd"), "{err}");
    assert_rejected(vec![E::hardlink("hl", "/etc/passwd")], "hl");
    assert_rejected(vec![E::hardlink("hl", "../sentinel")], "hl");
    // Target reached through a symlink, outside or inside dest.
    let err = assert_rejected(
        vec![E::symlink("etc", "/etc"), E::hardlink("hl", "etc/passwd")],
        "hl",
    );
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_rejected(
        vec![E::symlink("up", ".."), E::hardlink("hl", "up/sentinel")],
        "hl",
    );
    assert_rejected(
        vec![
            E::dir("real"),
            E::file("real/f", b"x"),
            E::symlink("alias", "real"),
            E::hardlink("hl", "alias/f"),
        ],
        "hl",
    );
    // Directories and missing targets.
    assert_rejected(vec![E::dir("d"), E::hardlink("hl", "d")], "hl");
    assert_rejected(vec![E::hardlink("hl", "missing")], "hl");
    assert_rejected(vec![E::hardlink("hl", "./")], "hl");
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::symlink("s", "/etc/passwd"),
        E::hardlink("h", "s"),
    ]))
    .unwrap();
    let m = fs::symlink_metadata(sb.path("h")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.nlink(), 2);
}

#[test]
fn rejects_escapes_hidden_in_pax_records() {
    assert_rejected(
        vec![E::file("innocent", b"x").pax("path", b"../evil")],
        "../evil",
    );
    // Longer than a ustar name field, and escaping only at its very end.
    let long = format!("{}{}x", "a/".repeat(60), "../".repeat(61));
    assert_rejected(
        vec![E::file("innocent", b"x").pax("path", long.as_bytes())],
        &long,
    );
    assert_rejected(
        vec![E::hardlink("hl", "ok").pax("linkpath", b"../sentinel")],
        "hl",
    );
}

#[test]
fn overlay_xattrs_from_the_layer_are_dropped() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::dir("d").pax("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
        E::dir("e").pax("SCHILY.xattr.trusted.other", b"kept"),
    ]))
    .unwrap();
    assert_eq!(lgetxattr(&sb.path("d"), "trusted.overlay.redirect"), None);
    assert_eq!(
        lgetxattr(&sb.path("e"), "trusted.other").as_deref(),
        Some(&b"kept"[..])
    );
}

#[test]
fn rejects_whiteout_escapes() {
    assert_rejected(vec![E::file("../.wh.x", b"")], "../.wh.x");
    assert_rejected(vec![E::file("a/.wh...", b"")], "a/.wh...");
    assert_rejected(vec![E::file("/.wh.x", b"")], "/.wh.x");
}

#[test]
fn error_kinds() {
    let sb = Sandbox::new();
    let mut tar = tar_of(vec![E::file("f", b"data")]);
    tar[0] ^= 0xff; // checksum mismatch
    let err = sb.unpack(&tar).unwrap_err();
    assert!(matches!(err, ArchiveError::Read { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::DataLoss);

    // Truncated inside a file's content.
    let tar = tar_of(vec![E::file("f", &[7u8; 4000])]);
    let err = Sandbox::new().unpack(&tar[..2048]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("\"f\""), "{err}");

    let err = unpack(
        Cursor::new(tar_of(vec![])),
        Path::new("/nonexistent/crius"),
        &root_opts(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Counts every byte read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn reads_the_stream_to_eof() {
    let mut tar = tar_of(vec![E::file("f", b"content")]);
    // Record padding after the end-of-archive marker, as GNU tar writes it.
    tar.extend_from_slice(&[0u8; 9216]);
    let read = Arc::new(AtomicU64::new(0));
    let sb = Sandbox::new();
    let reader = Counting {
        inner: Cursor::new(tar.clone()),
        read: read.clone(),
    };
    unpack(reader, &sb.dest(), &root_opts()).unwrap();
    assert_eq!(read.load(Ordering::Relaxed), tar.len() as u64);
}

/// Yields one byte per read, to exercise short reads of the magic.
struct Trickle(Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn decompress_detects_gzip_zstd_and_plain() {
    let tar = tar_of(vec![E::file("f", &[42u8; 100_000])]);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 1).unwrap();

    for (blob, want) in [
        (gz, Compression::Gzip),
        (zst, Compression::Zstd),
        (tar.clone(), Compression::None),
    ] {
        let (got, mut r) = decompress(Trickle(Cursor::new(blob.clone()))).unwrap();
        assert_eq!(got, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, tar, "{want:?}");

        let (_, r) = decompress(Cursor::new(blob)).unwrap();
        let sb = Sandbox::new();
        let stats = unpack(r, &sb.dest(), &root_opts()).unwrap();
        assert_eq!(stats.bytes, 100_000);
        assert_eq!(fs::read(sb.path("f")).unwrap().len(), 100_000);
    }

    // Too short for any magic.
    let (got, mut r) = decompress(Cursor::new(vec![1u8])).unwrap();
    assert_eq!(got, Compression::None);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, [1]);
}

#[test]
fn corrupt_compressed_stream_is_data_loss() {
    let tar = tar_of(vec![E::file("f", &[1u8; 10_000])]);
    let mut zst = zstd::encode_all(&tar[..], 1).unwrap();
    let n = zst.len();
    zst[n / 2..].iter_mut().for_each(|b| *b = !*b);
    let (_, r) = decompress(Cursor::new(zst)).unwrap();
    let err = unpack(r, &Sandbox::new().dest(), &root_opts()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
}

#[test]
fn remove_tree_handles_locked_dirs_and_symlinks() {
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::dir("locked").mode(0o000),
        E::file("locked/f", b"x").mode(0o000),
        E::dir("ro").mode(0o555),
        E::dir("ro/sub").mode(0o000),
        E::file("ro/sub/g", b"y"),
        E::symlink("ro/out", "../../outside"),
        E::symlink("abs", "/etc"),
    ]))
    .unwrap();
    let before = sb.outside();
    remove_tree(&sb.dest()).unwrap();
    assert!(!sb.dest().exists());
    assert_eq!(sb.outside(), before);
    assert!(Path::new("/etc/passwd").exists());
    // Idempotent.
    remove_tree(&sb.dest()).unwrap();
}

#[test]
fn remove_tree_handles_deep_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("deep");
    let mut p = top.clone();
    for _ in 0..300 {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("f"), b"x").unwrap();
    // A chain of read-only directories ending in an inaccessible one.
    let mut chain = Vec::new();
    let mut p = top.clone();
    for i in 0..50 {
        p.push(format!("w{i}"));
        chain.push(p.clone());
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("f"), b"x").unwrap();
    for (i, dir) in chain.iter().enumerate() {
        let mode = if i == chain.len() - 1 { 0o000 } else { 0o500 };
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    remove_tree(&top).unwrap();
    assert!(!top.exists());
}

#[test]
fn sparse_gnu_entries_unpack_with_holes() {
    // Build a GNU sparse member by hand: 1 MiB logical size, 512 bytes of data at 512 KiB.
    let mut h = Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..6].copy_from_slice(b"sparse");
        gnu.sparse[0].offset = *b"00002000000\0"; // octal 524288
        gnu.sparse[0].numbytes = *b"00000001000\0"; // octal 512
        // GNU tar ends the map with an empty chunk at the real size.
        gnu.sparse[1].offset = *b"00004000000\0";
        gnu.sparse[1].numbytes = *b"00000000000\0";
        gnu.realsize = *b"00004000000\0"; // octal 1 MiB
    }
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[9u8; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    let sb = Sandbox::new();
    let stats = sb.unpack(&tar).unwrap();
    assert_eq!(stats.bytes, 1 << 20);
    let data = fs::read(sb.path("sparse")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert!(data[..524288].iter().all(|b| *b == 0));
    assert!(data[524288..524800].iter().all(|b| *b == 9));
    assert!(data[524800..].iter().all(|b| *b == 0));
    let m = fs::metadata(sb.path("sparse")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20, "holes were written out");
}

#[test]
fn everything_holds_without_openat2() {
    crate::sys::FORCE_WALK.with(|f| f.set(true));
    unpacks_files_dirs_and_metadata();
    whiteouts_become_overlay_whiteouts();
    later_entries_replace_earlier_ones();
    rejects_path_traversal();
    never_writes_through_symlinks();
    rejects_hardlink_escapes();
    rejects_whiteout_escapes();
    rejects_escapes_hidden_in_pax_records();
    crate::sys::FORCE_WALK.with(|f| f.set(false));
}

/// Some image builders leave the device number fields of FIFOs and devices blank; Go's tar
/// reader (and so containerd) reads them as 0.
#[test]
fn blank_device_number_fields_read_as_zero() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let mut tar = tar_of(vec![E::new("fifo", b'6').mode(0o644)]);
    let header = &mut tar[..512];
    header[329..345].fill(b' ');
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    sb.unpack(&tar).unwrap();
    assert!(
        fs::symlink_metadata(sb.path("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// A raw header of type `kind` whose size field claims `size` bytes.
fn claiming_header(kind: u8, size: u64) -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"bomb");
    h.set_entry_type(EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn oversized_extension_headers_are_refused_unread() {
    // Go's archive/tar (and so containerd) refuses these with "header field too long"; the tar
    // crate would read the whole claimed size into memory first.
    for kind in [b'x', b'g', b'L', b'K'] {
        for claim in [crate::MAX_HEADER_FIELD + 1, 2 << 30] {
            let read = Arc::new(AtomicU64::new(0));
            let stream = Cursor::new(claiming_header(kind, claim)).chain(io::repeat(b'7'));
            let reader = Counting {
                inner: stream.take(claim + 4096),
                read: read.clone(),
            };
            let sb = Sandbox::new();
            let err = unpack(reader, &sb.dest(), &root_opts()).unwrap_err();
            assert!(
                matches!(err, ArchiveError::HeaderTooLong { size, .. } if size == claim),
                "{err}"
            );
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains("header field too long"), "{err}");
            let consumed = read.load(Ordering::Relaxed);
            assert!(
                consumed < crate::MAX_HEADER_FIELD,
                "type {}: {consumed} bytes read before refusing",
                kind as char
            );
        }
    }
}

#[test]
fn extension_headers_up_to_the_limit_are_accepted() {
    let long = "d/".repeat(2000) + "f";
    let sb = Sandbox::new();
    sb.unpack(&tar_of(vec![
        E::file("x", b"").pax("path", long.as_bytes()),
    ]))
    .unwrap();
    assert!(sb.path(&long).is_file());
}

#[test]
fn layer_ceilings_on_entries_and_bytes() {
    let tar = tar_of((0..5).map(|i| E::file(&format!("f{i}"), b"abc")).collect());
    let sb = Sandbox::new();
    let mut opts = root_opts();
    opts.max_entries = 3;
    let err = unpack(Cursor::new(&tar), &sb.dest(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Limit {
                what: "entries",
                limit: 3
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    opts.max_entries = 5;
    unpack(Cursor::new(&tar), &Sandbox::new().dest(), &opts).unwrap();

    let tar = tar_of(vec![E::file("a", &[1u8; 600]), E::file("b", &[2u8; 600])]);
    let mut opts = root_opts();
    opts.max_bytes = 1000;
    let err = unpack(Cursor::new(&tar), &Sandbox::new().dest(), &opts).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit { limit: 1000, .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    opts.max_bytes = 1200;
    unpack(Cursor::new(&tar), &Sandbox::new().dest(), &opts).unwrap();
}

#[test]
fn a_cancelled_unpack_stops() {
    let mut opts = root_opts();
    opts.cancel = Some(Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let tar = tar_of(vec![E::file("f", b"data")]);
    let err = unpack(Cursor::new(&tar), &Sandbox::new().dest(), &opts).unwrap_err();
    assert!(matches!(err, ArchiveError::Cancelled), "{err}");
}

/// A GNU sparse member with `regions` (offset, length) of data bytes `9`, `real` bytes long.
fn sparse_member(regions: &[(u64, u64)], real: u64, stored: u64) -> Vec<u8> {
    fn octal12(v: u64) -> [u8; 12] {
        let mut f = [0u8; 12];
        if v < 0o77777777777 {
            f[..11].copy_from_slice(format!("{v:011o}").as_bytes());
        } else {
            // base-256, as GNU tar writes sizes that do not fit in octal
            f[0] = 0x80;
            f[4..].copy_from_slice(&v.to_be_bytes());
        }
        f
    }
    let mut h = Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..6].copy_from_slice(b"sparse");
        for (slot, (off, len)) in gnu.sparse.iter_mut().zip(regions) {
            slot.offset = octal12(*off);
            slot.numbytes = octal12(*len);
        }
        gnu.realsize = octal12(real);
    }
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(stored);
    h.set_mode(0o644);
    h.set_mtime(MTIME);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    let padded = stored.div_ceil(512) * 512;
    tar.extend(std::iter::repeat_n(9u8, stored as usize));
    tar.extend(std::iter::repeat_n(0u8, (padded - stored) as usize));
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
fn sparse_bomb_finishes_in_seconds() {
    // 1 TiB of holes around 512 bytes of data: the tar crate would hand out a terabyte of
    // zeros to scan; holes are seeked over instead.
    let real = 1u64 << 40;
    let tar = sparse_member(&[(real - 512, 512)], real, 512);
    let sb = Sandbox::new();
    let started = std::time::Instant::now();
    match sb.unpack(&tar) {
        Ok(stats) => {
            assert_eq!(stats.bytes, real);
            let m = fs::metadata(sb.path("sparse")).unwrap();
            assert_eq!(m.len(), real);
            assert!(m.blocks() < 64, "holes were written out");
        }
        // A filesystem that cannot hold a 1 TiB file says so (EFBIG): also fine, if quick.
        Err(e) => assert!(matches!(e, ArchiveError::Io { .. }), "{e}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn sparse_maps_are_checked_against_the_declared_sizes() {
    for (regions, real, stored, what) in [
        (vec![(4096u64, 512u64)], 1024u64, 512u64, "beyond the file"),
        (vec![(0, 1024), (512, 512)], 4096, 1536, "overlapping"),
        (vec![(1024, 512), (0, 512)], 4096, 1024, "out of order"),
        (vec![(0, 512)], 4096, 1024, "less data than stored"),
        (vec![(0, 1024)], 4096, 512, "more data than stored"),
        (vec![(u64::MAX - 10, 512)], 4096, 512, "offset overflow"),
    ] {
        let err = Sandbox::new()
            .unpack(&sparse_member(&regions, real, stored))
            .expect_err(what);
        assert_eq!(err.kind(), ErrorKind::DataLoss, "{what}: {err}");
        assert!(err.to_string().contains("sparse"), "{what}: {err}");
    }
}

/// Unpack throughput, for before/after comparisons (`cargo test --release -p crius-archive
/// -- --ignored --nocapture bench_unpack`): 256 MiB in 2048 files plus 20,000 small files.
#[test]
#[ignore]
fn bench_unpack() {
    let mut entries = Vec::new();
    let big = vec![0x5au8; 128 << 10];
    for i in 0..2048 {
        entries.push(E::file(&format!("big/{}/f{i}", i % 16), &big));
    }
    for i in 0..20_000 {
        entries.push(E::file(&format!("small/{}/f{i}", i % 100), b"small file\n"));
    }
    let tar = tar_of(entries);
    let mut best = std::time::Duration::MAX;
    for _ in 0..3 {
        let sb = Sandbox::new();
        let started = std::time::Instant::now();
        sb.unpack(&tar).unwrap();
        best = best.min(started.elapsed());
    }
    let mb = tar.len() as f64 / (1 << 20) as f64;
    eprintln!(
        "unpack: {mb:.0} MiB, 22048 entries, best of 3: {best:?} ({:.0} MiB/s)",
        mb / best.as_secs_f64()
    );
}
