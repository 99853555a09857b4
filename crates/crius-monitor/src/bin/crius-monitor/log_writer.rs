//! Draining container output into the CRI log file.
//!
//! Pipes are read non-blocking so a container never waits on us for longer than it takes to
//! fill its pipe buffer; a failing log write drops the record but the pipe keeps being
//! drained, so the container can never block on a full disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crius_monitor::cri_log::{self, LineSplitter, Stream};

use crate::sys;

/// Reads per wakeup and stream, so one chatty container cannot starve the others.
const MAX_READS_PER_WAKEUP: usize = 4;
/// Reads when draining before an exit is recorded: enough for anything left in a pipe buffer,
/// bounded in case a surviving grandchild keeps writing.
const MAX_READS_DRAIN: usize = 64;

/// A container's log file; `None` path means output is drained and dropped.
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<LogFile> {
        if path.as_os_str().is_empty() {
            return Ok(LogFile {
                path: None,
                file: None,
            });
        }
        let file = open_log(path)?;
        Ok(LogFile {
            path: Some(path.to_path_buf()),
            file: Some(file),
        })
    }

    /// Reopens the file at the same path (after the kubelet rotated it away).
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(path) = &self.path {
            self.file = None;
            self.file = Some(open_log(path)?);
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file {
            // A short or failed write drops the rest of the batch: never block the container.
            let _ = f.write_all(data);
        }
    }
}

/// The log path comes from the request: a symlink planted there is not followed, and a FIFO
/// or device is refused (O_NONBLOCK so opening a FIFO cannot hang the monitor).
fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// The read end of a container's stdout or stderr (or the pty master, reported as stdout).
pub struct OutputPipe {
    pub fd: OwnedFd,
    stream: Stream,
    splitter: LineSplitter,
}

impl OutputPipe {
    pub fn new(fd: OwnedFd, stream: Stream) -> io::Result<OutputPipe> {
        sys::set_nonblocking(fd.as_fd())?;
        Ok(OutputPipe {
            fd,
            stream,
            splitter: LineSplitter::new(),
        })
    }

    /// Reads what is available (`drain`: what the pipe buffer holds) and writes the records;
    /// `tee` sees every chunk read (the attachers' copy).
    /// Returns true at end of stream, after flushing an unterminated line.
    pub fn pump(
        &mut self,
        log: &mut LogFile,
        buf: &mut [u8],
        scratch: &mut Vec<u8>,
        drain: bool,
        tee: &mut dyn FnMut(Stream, &[u8]),
    ) -> bool {
        let max = if drain {
            MAX_READS_DRAIN
        } else {
            MAX_READS_PER_WAKEUP
        };
        let mut reads = 0;
        loop {
            if reads == max {
                return false;
            }
            reads += 1;
            let eof = match sys::read(self.fd.as_fd(), buf) {
                Ok(0) => true,
                Ok(n) => {
                    tee(self.stream, &buf[..n]);
                    self.records(&buf[..n], log, scratch);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                // EIO is how a pty master reports that the slave side is gone.
                Err(_) => true,
            };
            if eof {
                let stream = self.stream;
                let now = cri_log::now_unix_nanos();
                self.splitter.finish(&mut |tag, content| {
                    cri_log::format_record(scratch, now, stream, tag, content)
                });
                log.write(scratch);
                scratch.clear();
                return true;
            }
        }
    }

    fn records(&mut self, data: &[u8], log: &mut LogFile, scratch: &mut Vec<u8>) {
        let stream = self.stream;
        let now = cri_log::now_unix_nanos();
        self.splitter.feed(data, &mut |tag, content| {
            cri_log::format_record(scratch, now, stream, tag, content)
        });
        // One write per read keeps records from the two streams whole in the file.
        log.write(scratch);
        scratch.clear();
    }
}
