//! `criusctl logs`: reads the container's CRI log file (the path from ContainerStatus)
//! and prints it like crictl: stdout records to stdout, stderr records to stderr.
//!
//! The file holds one record per line, `<RFC 3339 time> <stdout|stderr> <P|F> <text>`;
//! `P` marks a piece of a longer line that the next records of the same stream continue,
//! up to the `F` record that ends it. With `--follow` the file is polled until the container
//! stops and everything written is read; a file replaced by rotation is read to its end and
//! then the new one from its start, and a file truncated in place is read from its start.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_cri::v1::{ContainerState, ContainerStatusRequest};
use tonic::Code;

use crate::cli::LogsArgs;
use crate::client::Context;

/// How often a followed file is polled for more.
const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Idle polls between two checks whether the container still runs.
const POLLS_PER_STATUS_CHECK: u32 = 4;

pub async fn run(ctx: &Context, args: &LogsArgs) -> Result<()> {
    let mut client = ctx.runtime().await?;
    let id = args.container.clone();
    let request = ContainerStatusRequest {
        container_id: id.clone(),
        verbose: false,
    };
    ctx.trace("ContainerStatusRequest", &request);
    let status = client
        .container_status(request)
        .await?
        .into_inner()
        .status
        .with_context(|| format!("no status for container {id}"))?;
    if status.log_path.is_empty() {
        bail!("container {id} has no log file (its config set no log_path)");
    }
    let path = Path::new(&status.log_path);
    let mut out = Output {
        stdout: io::stdout(),
        stderr: io::stderr(),
        timestamps: args.timestamps,
    };
    if !args.follow {
        return print_file(path, args.tail, &mut out);
    }
    follow(path, args.tail, &mut out, async || {
        let request = ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        };
        match client.container_status(request).await {
            Ok(response) => Ok(response
                .into_inner()
                .status
                .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32)),
            // Removed meanwhile: it will write no more.
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status.into()),
        }
    })
    .await
}

/// Which output a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output, pieced together from its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The time of its first record, as written.
    pub timestamp: String,
    pub stream: Stream,
    pub text: Vec<u8>,
    /// False for the pieces left at the end of the file with no `F` record after them.
    pub complete: bool,
}

/// Turns records into lines, joining each stream's partial records.
#[derive(Debug, Default)]
pub struct Parser {
    /// Per stream: the time of the first piece and the text so far.
    partial: [Option<(String, Vec<u8>)>; 2],
}

impl Parser {
    /// Takes one record (without its newline); a line when it ends one.
    pub fn record(&mut self, record: &[u8]) -> Result<Option<LogLine>> {
        let (timestamp, stream, partial, text) = split_record(record)?;
        let slot = &mut self.partial[stream as usize];
        let (first_timestamp, mut joined) = slot
            .take()
            .unwrap_or_else(|| (timestamp.to_owned(), Vec::new()));
        joined.extend_from_slice(text);
        if partial {
            *slot = Some((first_timestamp, joined));
            return Ok(None);
        }
        Ok(Some(LogLine {
            timestamp: first_timestamp,
            stream,
            text: joined,
            complete: true,
        }))
    }

    /// The pieces still waiting for their `F` record, stdout first.
    pub fn flush(&mut self) -> Vec<LogLine> {
        [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|stream| {
                self.partial[stream as usize]
                    .take()
                    .map(|(timestamp, text)| LogLine {
                        timestamp,
                        stream,
                        text,
                        complete: false,
                    })
            })
            .collect()
    }
}

/// `<time> <stream> <tags> <text>`; the first tag is `P` (partial) or `F` (full).
fn split_record(record: &[u8]) -> Result<(&str, Stream, bool, &[u8])> {
    let mut fields = record.splitn(4, |&b| b == b' ');
    let (Some(timestamp), Some(stream), Some(tags)) = (fields.next(), fields.next(), fields.next())
    else {
        bail!("malformed log record {:?}", String::from_utf8_lossy(record));
    };
    let text = fields.next().unwrap_or_default();
    let timestamp = std::str::from_utf8(timestamp)
        .ok()
        .filter(|t| !t.is_empty())
        .with_context(|| format!("malformed log record {:?}", String::from_utf8_lossy(record)))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => bail!("unknown log stream {:?}", String::from_utf8_lossy(other)),
    };
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => bail!("unknown log tag {:?}", String::from_utf8_lossy(tags)),
    };
    Ok((timestamp, stream, partial, text))
}

/// Where lines go.
pub struct Output<O: Write, E: Write> {
    pub stdout: O,
    pub stderr: E,
    pub timestamps: bool,
}

impl<O: Write, E: Write> Output<O, E> {
    fn line(&mut self, line: &LogLine) -> io::Result<()> {
        let sink: &mut dyn Write = match line.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        if self.timestamps {
            sink.write_all(line.timestamp.as_bytes())?;
            sink.write_all(b" ")?;
        }
        sink.write_all(&line.text)?;
        if line.complete {
            sink.write_all(b"\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()?;
        self.stderr.flush()
    }
}

/// A log file read in order, handing out whole records.
struct Source {
    file: File,
    /// Bytes read so far from this file.
    position: u64,
    /// The start of a record whose newline has not been written yet.
    rest: Vec<u8>,
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).with_context(|| format!("opening log file {}", path.display()))?;
        Ok(Self {
            file,
            position: 0,
            rest: Vec::new(),
        })
    }

    /// The complete records written since the last call.
    fn records(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            self.position += n as u64;
            self.rest.extend_from_slice(&chunk[..n]);
        }
        let Some(last_newline) = self.rest.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let tail = self.rest.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.rest, tail);
        Ok(complete[..last_newline]
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// What is left unterminated: at the very end, it is a record too.
    fn take_rest(&mut self) -> Option<Vec<u8>> {
        (!self.rest.is_empty()).then(|| std::mem::take(&mut self.rest))
    }

    /// After reading to the end: switches to a new file at `path` (rotation) or back to
    /// the start of a truncated one. The unterminated rest of a replaced file comes back.
    fn reopen_if_replaced(&mut self, path: &Path) -> Result<Option<Vec<Vec<u8>>>> {
        let current = match std::fs::metadata(path) {
            Ok(meta) => meta,
            // Between the rename and the new file: wait for it.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).context(format!("checking {}", path.display())),
        };
        let open = self.file.metadata()?;
        if current.ino() != open.ino() || current.dev() != open.dev() {
            let left = self.take_rest().into_iter().collect();
            *self = Self::open(path)?;
            return Ok(Some(left));
        }
        if open.len() < self.position {
            self.file.seek(io::SeekFrom::Start(0))?;
            self.position = 0;
            self.rest.clear();
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }
}

/// Parses records, telling about (and skipping) malformed ones as crictl does.
fn parse_all(parser: &mut Parser, records: Vec<Vec<u8>>) -> Vec<LogLine> {
    records
        .into_iter()
        .filter(|r| !r.is_empty())
        .filter_map(|record| match parser.record(&record) {
            Ok(line) => line,
            Err(err) => {
                eprintln!("criusctl: skipping: {err}");
                None
            }
        })
        .collect()
}

/// Keeps the last `tail` of `lines` (all of them without a limit).
fn keep_last(lines: Vec<LogLine>, tail: Option<usize>) -> Vec<LogLine> {
    match tail {
        Some(n) if n < lines.len() => {
            let mut lines = VecDeque::from(lines);
            lines.drain(..lines.len() - n);
            lines.into()
        }
        _ => lines,
    }
}

/// Reads everything there is now, the last `tail` lines of it.
fn read_existing(
    source: &mut Source,
    parser: &mut Parser,
    tail: Option<usize>,
) -> Result<Vec<LogLine>> {
    let lines = parse_all(parser, source.records()?);
    Ok(keep_last(lines, tail))
}

/// Prints the file as it is now.
pub fn print_file<O: Write, E: Write>(
    path: &Path,
    tail: Option<usize>,
    out: &mut Output<O, E>,
) -> Result<()> {
    let mut source = Source::open(path)?;
    let mut parser = Parser::default();
    let mut lines = parse_all(&mut parser, source.records()?);
    lines.extend(parse_all(
        &mut parser,
        source.take_rest().into_iter().collect(),
    ));
    lines.extend(parser.flush());
    for line in keep_last(lines, tail) {
        out.line(&line)?;
    }
    out.flush()?;
    Ok(())
}

/// Prints the file and what is added to it, until `running` says the container stopped
/// and the file has been read to its end.
pub async fn follow<O: Write, E: Write>(
    path: &Path,
    tail: Option<usize>,
    out: &mut Output<O, E>,
    mut running: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let mut source = Source::open(path)?;
    let mut parser = Parser::default();
    for line in read_existing(&mut source, &mut parser, tail)? {
        out.line(&line)?;
    }
    out.flush()?;
    let mut idle_polls = 0u32;
    let mut stopped = false;
    loop {
        let records = source.records()?;
        if !records.is_empty() {
            for line in parse_all(&mut parser, records) {
                out.line(&line)?;
            }
            out.flush()?;
            idle_polls = 0;
            continue;
        }
        if let Some(left) = source.reopen_if_replaced(path)? {
            for line in parse_all(&mut parser, left) {
                out.line(&line)?;
            }
            continue;
        }
        if stopped {
            break;
        }
        if idle_polls.is_multiple_of(POLLS_PER_STATUS_CHECK) && !running().await? {
            // One more pass: whatever was written before it stopped is still printed.
            stopped = true;
            continue;
        }
        idle_polls += 1;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    for line in parse_all(&mut parser, source.take_rest().into_iter().collect()) {
        out.line(&line)?;
    }
    for line in parser.flush() {
        out.line(&line)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const T1: &str = "2024-01-02T03:04:05.000000001Z";
    const T2: &str = "2024-01-02T03:04:06.000000002Z";

    fn output() -> Output<Vec<u8>, Vec<u8>> {
        Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            timestamps: false,
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn full_records() {
        let mut parser = Parser::default();
        let line = parser
            .record(format!("{T1} stdout F hello world").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(line.timestamp, T1);
        assert_eq!(line.stream, Stream::Stdout);
        assert_eq!(text(&line.text), "hello world");
        // An empty line, with and without the separator.
        let line = parser
            .record(format!("{T1} stderr F ").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (line.stream, line.text.as_slice()),
            (Stream::Stderr, &b""[..])
        );
        let line = parser
            .record(format!("{T1} stdout F").as_bytes())
            .unwrap()
            .unwrap();
        assert!(line.text.is_empty());
        // Spaces in the text are kept; extra tags after ':' are ignored.
        let line = parser
            .record(format!("{T1} stdout F:x  two  spaces ").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(text(&line.text), " two  spaces ");
    }

    #[test]
    fn partial_records_join_per_stream() {
        let mut parser = Parser::default();
        assert_eq!(
            parser
                .record(format!("{T1} stdout P abc").as_bytes())
                .unwrap(),
            None
        );
        // A stderr line in between does not disturb the stdout pieces.
        let err = parser
            .record(format!("{T1} stderr F oops").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(text(&err.text), "oops");
        assert_eq!(
            parser
                .record(format!("{T2} stdout P def").as_bytes())
                .unwrap(),
            None
        );
        let line = parser
            .record(format!("{T2} stdout F ghi").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(text(&line.text), "abcdefghi");
        assert_eq!(
            line.timestamp, T1,
            "a joined line has its first piece's time"
        );
        assert!(parser.flush().is_empty());

        parser
            .record(format!("{T1} stderr P dangling").as_bytes())
            .unwrap();
        let left = parser.flush();
        assert_eq!(left.len(), 1);
        assert!(!left[0].complete);
        assert_eq!(text(&left[0].text), "dangling");
    }

    #[test]
    fn malformed_records() {
        let mut parser = Parser::default();
        assert!(parser.record(b"garbage").is_err());
        assert!(parser.record(format!("{T1} stdin F x").as_bytes()).is_err());
        assert!(
            parser
                .record(format!("{T1} stdout X x").as_bytes())
                .is_err()
        );
        assert!(parser.record(b" stdout F x").is_err());
    }

    fn write_log(dir: &Path, lines: &[String]) -> std::path::PathBuf {
        let path = dir.join("0.log");
        std::fs::write(&path, lines.concat()).unwrap();
        path
    }

    fn sample() -> Vec<String> {
        vec![
            format!("{T1} stdout F one\n"),
            format!("{T1} stderr F warning\n"),
            format!("{T1} stdout P tw\n"),
            format!("{T2} stdout F o\n"),
            "not a record\n".to_owned(),
            format!("{T2} stdout F three\n"),
        ]
    }

    #[test]
    fn streams_are_split_and_timestamps_optional() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &sample());
        let mut out = output();
        print_file(&path, None, &mut out).unwrap();
        assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");
        assert_eq!(text(&out.stderr), "warning\n");

        let mut out = output();
        out.timestamps = true;
        print_file(&path, None, &mut out).unwrap();
        assert_eq!(
            text(&out.stdout),
            format!("{T1} one\n{T1} two\n{T2} three\n")
        );
        assert_eq!(text(&out.stderr), format!("{T1} warning\n"));
    }

    #[test]
    fn tail_counts_joined_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &sample());
        let mut out = output();
        print_file(&path, Some(2), &mut out).unwrap();
        assert_eq!(text(&out.stdout), "two\nthree\n");
        assert_eq!(text(&out.stderr), "");

        let mut out = output();
        print_file(&path, Some(0), &mut out).unwrap();
        assert!(out.stdout.is_empty() && out.stderr.is_empty());

        let mut out = output();
        print_file(&path, Some(100), &mut out).unwrap();
        assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");
    }

    #[test]
    fn unterminated_last_record_is_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            &[format!("{T1} stdout F a\n"), format!("{T1} stdout F b")],
        );
        let mut out = output();
        print_file(&path, None, &mut out).unwrap();
        assert_eq!(text(&out.stdout), "a\nb\n");
    }

    fn append(path: &Path, data: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(data.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn follow_survives_rotation_and_drains_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(
            dir.path(),
            &[
                format!("{T1} stdout F old\n"),
                format!("{T1} stdout F kept\n"),
            ],
        );
        let running = Arc::new(AtomicBool::new(true));
        let writer = {
            let path = path.clone();
            let running = running.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                // A record caught half-written, then a partial record and its end.
                append(&path, &format!("{T2} stdout P ha"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                append(
                    &path,
                    &format!("lf\n{T2} stdout F -line\n{T2} stdout F done\n"),
                );
                // Rotate as kubelet does: rename, then the runtime reopens a new file.
                tokio::time::sleep(Duration::from_millis(200)).await;
                append(
                    &path,
                    &format!("{T2} stderr F last words of the old file\n"),
                );
                std::fs::rename(&path, path.with_extension("log.1")).unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(&path, format!("{T2} stdout F new file\n")).unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                // Written just before the exit is still printed.
                append(&path, &format!("{T2} stdout F bye\n"));
                running.store(false, Ordering::SeqCst);
            }
        };
        let mut out = output();
        let flag = running.clone();
        let reader = follow(&path, Some(1), &mut out, async || {
            Ok(flag.load(Ordering::SeqCst))
        });
        let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(reader, writer)
        })
        .await
        .expect("follow did not end after the container stopped");
        result.unwrap();
        assert_eq!(text(&out.stdout), "kept\nhalf-line\ndone\nnew file\nbye\n");
        assert_eq!(text(&out.stderr), "last words of the old file\n");
    }

    #[tokio::test]
    async fn follow_rereads_a_truncated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), &[format!("{T1} stdout F a long first line\n")]);
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let path = path.clone();
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(&path, format!("{T2} stdout F b\n")).unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                done.store(true, Ordering::SeqCst);
            }
        };
        let mut out = output();
        let flag = done.clone();
        let reader = follow(&path, None, &mut out, async || {
            Ok(!flag.load(Ordering::SeqCst))
        });
        let (result, ()) = tokio::join!(reader, writer);
        result.unwrap();
        assert_eq!(text(&out.stdout), "a long first line\nb\n");
    }
}
