//! A tar reader with bounds.
//!
//! The `tar` crate reads PAX and GNU long-name/long-link payloads whole into memory however
//! large their header says they are (a 9 MB gzip layer claiming a 2 GiB PAX header costs 2 GiB
//! of RAM), and expands GNU sparse holes into zeros that must then be scanned. This reader
//! refuses extension payloads over [`MAX_SPECIAL`] before reading a byte of them (Go's
//! archive/tar limit, which containerd inherits), checks sparse maps against the sizes the
//! entry declares, and hands file data out as a bounded stream. `tar::Header` still decodes the
//! 512-byte header fields.

use std::io::{self, Read};

use tar::{EntryType, GnuExtSparseHeader, Header, PaxExtensions};

use crate::ArchiveError;

/// Largest PAX, GNU long-name or long-link payload accepted (Go's `maxSpecialFileSize`).
pub(crate) const MAX_SPECIAL: u64 = 1 << 20;
/// Extension blocks of one GNU sparse map: as many as fit in [`MAX_SPECIAL`].
const MAX_SPARSE_BLOCKS: usize = (MAX_SPECIAL / BLOCK) as usize;
const BLOCK: u64 = 512;

/// One tar member with its extension headers applied.
pub(crate) struct TarEntry {
    pub header: Header,
    /// The name: GNU long name, else PAX `path`, else the header's.
    pub path: Vec<u8>,
    /// The link target: GNU long link, else PAX `linkpath`, else the header's.
    pub link: Option<Vec<u8>>,
    /// The PAX records that preceded this member.
    pub pax: Option<Vec<u8>>,
    /// Size of the file described; for a sparse file, its full size with holes.
    pub size: u64,
    /// Data regions `(offset, length)` of a sparse file, ordered, disjoint and within `size`;
    /// their lengths add up to the data stored in the archive.
    pub sparse: Option<Vec<(u64, u64)>>,
}

impl TarEntry {
    pub fn kind(&self) -> EntryType {
        self.header.entry_type()
    }
}

pub(crate) struct TarReader<R> {
    inner: R,
    /// Data bytes of the current member not yet read.
    remaining: u64,
    /// Padding after the current member's data.
    padding: u64,
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Strips the NUL terminator GNU writes after long names.
fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Go's archive/tar accepts the unsigned and the (historic) signed header checksum.
fn checksum_ok(header: &Header) -> io::Result<bool> {
    let bytes = header.as_bytes();
    let mut unsigned = 8 * 32u32;
    let mut signed = 8 * 32i32;
    for (i, b) in bytes.iter().enumerate() {
        if (148..156).contains(&i) {
            continue;
        }
        unsigned += *b as u32;
        signed += *b as i8 as i32;
    }
    let want = header.cksum()?;
    Ok(want == unsigned || want as i32 == signed)
}

fn pax_value<'a>(pax: &'a [u8], key: &[u8]) -> io::Result<Option<&'a [u8]>> {
    let mut found = None;
    for ext in PaxExtensions::new(pax) {
        let ext = ext?;
        // The last record of a key wins.
        if ext.key_bytes() == key {
            found = Some(ext.value_bytes());
        }
    }
    Ok(found)
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Skips whatever the caller left of the current member.
    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        let skipped = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if skipped != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer stream ends inside an entry",
            ));
        }
        Ok(())
    }

    /// Reads a header block; `None` at the end of the archive (EOF or a zero block).
    fn read_header(&mut self) -> io::Result<Option<Header>> {
        let mut header = Header::new_old();
        let buf = header.as_mut_bytes();
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) if n == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "layer stream ends inside a tar header",
                    ));
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if header.as_bytes().iter().all(|b| *b == 0) {
            return Ok(None);
        }
        if !checksum_ok(&header)? {
            return Err(corrupt("archive header checksum mismatch"));
        }
        Ok(Some(header))
    }

    /// Reads an extension payload of `size` bytes, refusing it unread when too large.
    fn read_special(&mut self, what: &'static str, size: u64) -> Result<Vec<u8>, ArchiveError> {
        if size > MAX_SPECIAL {
            return Err(ArchiveError::HeaderTooLong {
                what,
                size,
                limit: MAX_SPECIAL,
            });
        }
        let mut v = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|source| ArchiveError::Read {
                entry: None,
                source,
            })?;
        self.remaining = 0;
        self.padding = padding(size);
        self.skip_rest().map_err(read_err)?;
        Ok(v)
    }

    /// The next member, its extension headers consumed and applied; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, ArchiveError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            self.skip_rest().map_err(read_err)?;
            let Some(header) = self.read_header().map_err(read_err)? else {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(read_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "extension headers without the entry they describe",
                    )));
                }
                return Ok(None);
            };
            let size = header.entry_size().map_err(read_err)?;
            let slot = match header.entry_type() {
                EntryType::XHeader => Some((&mut pax, "PAX header")),
                EntryType::GNULongName => Some((&mut long_name, "GNU long name")),
                EntryType::GNULongLink => Some((&mut long_link, "GNU long link")),
                EntryType::XGlobalHeader => {
                    // Archive-wide defaults nobody relies on for layers: bounded, then dropped.
                    self.read_special("PAX global header", size)?;
                    continue;
                }
                _ => None,
            };
            if let Some((slot, what)) = slot {
                if slot.is_some() {
                    return Err(read_err(corrupt(format!("two {what}s for one entry"))));
                }
                *slot = Some(self.read_special(what, size)?);
                continue;
            }
            return self
                .member(header, size, long_name, long_link, pax)
                .map(Some);
        }
    }

    fn member(
        &mut self,
        header: Header,
        header_size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<Vec<u8>>,
    ) -> Result<TarEntry, ArchiveError> {
        let pax_field = |key: &[u8]| -> Result<Option<Vec<u8>>, ArchiveError> {
            match &pax {
                Some(p) => pax_value(p, key)
                    .map(|v| v.map(<[u8]>::to_vec))
                    .map_err(read_err),
                None => Ok(None),
            }
        };
        let path = match long_name {
            Some(n) => strip_nul(n),
            None => match pax_field(b"path")? {
                Some(p) => p,
                None => header.path_bytes().into_owned(),
            },
        };
        let link = match long_link {
            Some(n) => Some(strip_nul(n)),
            None => match pax_field(b"linkpath")? {
                Some(p) => Some(p),
                None => header.link_name_bytes().map(|c| c.into_owned()),
            },
        };
        let entry_err = |msg: String| ArchiveError::Read {
            entry: Some(lossy(&path)),
            source: corrupt(msg),
        };
        // A PAX size overrides the header's (readers that disagree see different archives).
        let data_size = match pax_field(b"size")? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| entry_err(format!("invalid PAX size {:?}", lossy(&v))))?,
            None => header_size,
        };
        let mut entry = TarEntry {
            header,
            path,
            link,
            pax,
            size: data_size,
            sparse: None,
        };
        if entry.kind() == EntryType::GNUSparse {
            let (map, real_size) =
                self.sparse_map(&entry.header, data_size)
                    .map_err(|e| ArchiveError::Read {
                        entry: Some(lossy(&entry.path)),
                        source: e,
                    })?;
            entry.sparse = Some(map);
            entry.size = real_size;
        }
        self.remaining = data_size;
        self.padding = padding(data_size);
        Ok(entry)
    }

    /// Reads an old-GNU sparse map (the header's four slots plus extension blocks) and checks
    /// it: regions ordered and disjoint, inside the declared file size, and their lengths
    /// adding up to the data stored.
    fn sparse_map(&mut self, header: &Header, stored: u64) -> io::Result<(Vec<(u64, u64)>, u64)> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| corrupt("sparse entry without a GNU header"))?;
        let real_size = gnu.real_size()?;
        let mut map = Vec::new();
        let mut end = 0u64;
        let mut total = 0u64;
        let mut add = |off: u64, len: u64| -> io::Result<()> {
            if off < end {
                return Err(corrupt("sparse regions out of order or overlapping"));
            }
            end = off
                .checked_add(len)
                .filter(|e| *e <= real_size)
                .ok_or_else(|| corrupt("sparse region beyond the file's declared size"))?;
            total = total
                .checked_add(len)
                .filter(|t| *t <= stored)
                .ok_or_else(|| corrupt("sparse regions hold more data than the entry stores"))?;
            if len > 0 {
                map.push((off, len));
            }
            Ok(())
        };
        for s in gnu.sparse.iter().filter(|s| !s.is_empty()) {
            add(s.offset()?, s.length()?)?;
        }
        let mut extended = gnu.is_extended();
        let mut blocks = 0usize;
        while extended {
            blocks += 1;
            if blocks > MAX_SPARSE_BLOCKS {
                return Err(corrupt(format!(
                    "sparse map longer than {MAX_SPARSE_BLOCKS} extension blocks"
                )));
            }
            let mut ext = GnuExtSparseHeader::new();
            self.inner.read_exact(ext.as_mut_bytes())?;
            for s in ext.sparse.iter().filter(|s| !s.is_empty()) {
                add(s.offset()?, s.length()?)?;
            }
            extended = ext.is_extended();
        }
        if total != stored {
            return Err(corrupt(format!(
                "sparse regions hold {total} bytes, the entry stores {stored}"
            )));
        }
        Ok((map, real_size))
    }

    /// Reads data of the current member; 0 at its end. A stream that ends early is an error.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer stream ends inside the file",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_data(buf)
    }
}

fn read_err(source: io::Error) -> ArchiveError {
    ArchiveError::Read {
        entry: None,
        source,
    }
}
