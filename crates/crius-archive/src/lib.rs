//! Safe unpacking of OCI image layers.
//!
//! CONTRACT (used by crius-image; keep these signatures):
//!
//! ```ignore
//! pub enum Compression { None, Gzip, Zstd }
//! /// Wraps `reader` in the right decompressor, chosen by magic bytes (as containerd does;
//! /// the media type is only a hint).
//! pub fn decompress<R: Read + Send + 'static>(reader: R) -> std::io::Result<(Compression, Box<dyn Read + Send>)>;
//! pub struct UnpackOptions { pub same_owner: bool, pub max_bytes: u64, pub max_entries: u64,
//!                            pub cancel: Option<Arc<AtomicBool>> }   // UnpackOptions::new(same_owner)
//! pub struct UnpackStats { pub bytes: u64, pub inodes: u64 }
//! /// Unpacks an uncompressed tar stream into `dest`, an existing empty directory, turning OCI
//! /// whiteouts into overlayfs whiteouts. Reads `reader` to EOF (so a hashing reader around it
//! /// sees the whole stream). On error `dest` may hold partial content: the caller removes it.
//! pub fn unpack<R: Read>(reader: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, ArchiveError>;
//! pub fn remove_tree(path: &Path) -> std::io::Result<()>;
//! ```
//!
//! Security boundary: an image layer can never create, modify or link anything outside `dest`.
//! Entry names are normalised lexically and rejected when they escape; every file is created
//! with `*at` syscalls relative to a directory fd reached without following any symlink.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crius_error::{ErrorKind, HasKind};

mod path;
mod reader;
mod remove;
mod sys;
mod unpack;

pub use remove::remove_tree;

/// Compression of a layer blob, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Wraps `reader` in the right decompressor, chosen by magic bytes (gzip `1f 8b`, zstd
/// `28 b5 2f fd`), else returns the plain tar stream. As containerd does, the media type is only
/// a hint: the bytes decide.
pub fn decompress<R: Read + Send + 'static>(
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send>)> {
    // A single read may return fewer bytes than the magic; keep reading until 4 or EOF.
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let head = magic[..n].to_vec();
    let compression = if head.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let stream = io::Cursor::new(head).chain(reader);
    let out: Box<dyn Read + Send> = match compression {
        // Multi-member: Go's gzip reader (used by image builders) accepts concatenated members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        Compression::None => Box::new(stream),
    };
    Ok((compression, out))
}

/// Default ceiling on the bytes of file data one layer may unpack.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Default ceiling on the tar entries of one layer.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;
/// Largest PAX, GNU long-name or long-link header accepted (Go's archive/tar limit).
pub const MAX_HEADER_FIELD: u64 = reader::MAX_SPECIAL;

/// How to unpack a layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// lchown every entry to the uid/gid recorded in the tar (true when running as root).
    pub same_owner: bool,
    /// Ceiling on the file data written (the holes of sparse files are not written).
    pub max_bytes: u64,
    /// Ceiling on the tar entries read (extension headers not counted).
    pub max_entries: u64,
    /// Set by the caller to stop the unpack (the pull was cancelled or stalled).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl UnpackOptions {
    /// The default ceilings, no cancellation.
    pub fn new(same_owner: bool) -> Self {
        UnpackOptions {
            same_owner,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            cancel: None,
        }
    }
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackStats {
    /// Sum of the sizes of the regular files written.
    pub bytes: u64,
    /// Number of filesystem entries created (including implicit parent directories, hard links
    /// and whiteouts).
    pub inodes: u64,
}

/// Unpacks an uncompressed tar stream into `dest`, an existing empty directory, turning OCI
/// whiteouts into overlayfs whiteouts. Reads `reader` to EOF (so a hashing reader around it sees
/// the whole stream). On error `dest` may hold partial content: the caller removes it (see
/// [`remove_tree`]).
pub fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, ArchiveError> {
    unpack::unpack(reader, dest, opts)
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The entry would write outside the layer directory (or through a symlink).
    #[error("layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// The stream could not be read: corrupt tar, bad compression, or the source failed.
    #[error("reading layer stream{}: {source}", at_entry(.entry))]
    Read {
        /// The entry being read, if the failure happened inside one.
        entry: Option<String>,
        #[source]
        source: io::Error,
    },
    /// Creating or updating an entry on disk failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A PAX or GNU long-name/long-link header larger than [`MAX_HEADER_FIELD`]: refused
    /// before it is read.
    #[error("header field too long: {what} of {size} bytes (limit {limit})")]
    HeaderTooLong {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// The layer goes past a configured ceiling.
    #[error("layer exceeds the limit of {limit} {what}")]
    Limit { what: &'static str, limit: u64 },
    /// The caller cancelled the unpack.
    #[error("unpacking cancelled")]
    Cancelled,
    /// The destination directory itself could not be opened.
    #[error("opening layer directory {}: {source}", .path.display())]
    Dest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn at_entry(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!(" at entry {e:?}"),
        None => String::new(),
    }
}

impl HasKind for ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::UnsafeEntry { .. } | ArchiveError::HeaderTooLong { .. } => {
                ErrorKind::InvalidArgument
            }
            ArchiveError::Limit { .. } => ErrorKind::ResourceExhausted,
            ArchiveError::Cancelled => ErrorKind::Aborted,
            ArchiveError::Read { source, .. } => match source.kind() {
                // The tar crate and the zstd decoder report corruption as `Other`; flate2 uses
                // InvalidInput/InvalidData; a truncated stream is UnexpectedEof.
                io::ErrorKind::Other
                | io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof => ErrorKind::DataLoss,
                _ => ErrorKind::from_io(source),
            },
            ArchiveError::Io { source, .. } | ArchiveError::Dest { source, .. } => {
                ErrorKind::from_io(source)
            }
        }
    }
}

#[cfg(test)]
mod tests;
