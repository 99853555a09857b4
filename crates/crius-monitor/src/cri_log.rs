//! The CRI container log format, matched to containerd (`internal/cri/io/logger.go`):
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a full line
//! ```
//!
//! * the timestamp is UTC with exactly nine fraction digits (containerd's
//!   `2006-01-02T15:04:05.000000000Z07:00`, trailing zeros kept);
//! * a line longer than [`MAX_LINE`] bytes is cut into `P` records of `MAX_LINE` bytes, the last
//!   piece is `F`;
//! * the trailing `\n` (or `\r\n`) is stripped from the content;
//! * an unterminated line at end of stream is written with tag `P`, as containerd does.

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Splits a byte stream into log records. Holds at most `MAX_LINE` bytes of an unfinished line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the stream; `emit` is called for every finished record.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.finish_line(&data[..i], emit);
                    data = &data[i + 1..];
                }
                None => {
                    self.push_partial(data, emit);
                    return;
                }
            }
        }
    }

    /// End of stream: flushes an unterminated line as `P`.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8])) {
        if !self.partial.is_empty() {
            emit(Tag::Partial, &self.partial);
            self.clear();
        }
    }

    /// Bytes of an unfinished line held back.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn push_partial(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        // containerd only cuts once a line is *longer* than MAX_LINE, so up to MAX_LINE + 1
        // bytes are held before a P record of exactly MAX_LINE bytes goes out.
        while !data.is_empty() {
            if self.partial.is_empty() && data.len() > MAX_LINE {
                emit(Tag::Partial, &data[..MAX_LINE]);
                data = &data[MAX_LINE..];
                continue;
            }
            let room = MAX_LINE + 1 - self.partial.len();
            let n = room.min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() > MAX_LINE {
                emit(Tag::Partial, &self.partial[..MAX_LINE]);
                self.partial.drain(..MAX_LINE);
            }
        }
    }

    fn finish_line(&mut self, line: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
        if self.partial.is_empty() {
            emit_line(line, emit);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(line);
            emit_line(&buf, emit);
            buf.clear();
            self.partial = buf;
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.partial.clear();
        // A one-off long line must not pin 16 KiB per stream for the container's lifetime.
        if self.partial.capacity() > 4096 {
            self.partial.shrink_to(0);
        }
    }
}

fn emit_line(mut line: &[u8], emit: &mut impl FnMut(Tag, &[u8])) {
    if let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    while line.len() > MAX_LINE {
        emit(Tag::Partial, &line[..MAX_LINE]);
        line = &line[MAX_LINE..];
    }
    emit(Tag::Full, line);
}

/// Appends one record: `<timestamp> <stream> <tag> <content>\n`.
pub fn format_record(out: &mut Vec<u8>, unix_nanos: i64, stream: Stream, tag: Tag, content: &[u8]) {
    format_timestamp(out, unix_nanos);
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(tag.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Appends `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, fixed nine fraction digits).
pub fn format_timestamp(out: &mut Vec<u8>, unix_nanos: i64) {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    push_num(out, y, 4);
    out.push(b'-');
    push_num(out, m, 2);
    out.push(b'-');
    push_num(out, d, 2);
    out.push(b'T');
    push_num(out, sod / 3600, 2);
    out.push(b':');
    push_num(out, sod / 60 % 60, 2);
    out.push(b':');
    push_num(out, sod % 60, 2);
    out.push(b'.');
    push_num(out, nanos, 9);
    out.push(b'Z');
}

fn push_num(out: &mut Vec<u8>, v: i64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = v.unsigned_abs();
    let mut i = digits.len();
    while v > 0 {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let start = i.min(digits.len() - width);
    out.extend_from_slice(&digits[start..]);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Current time in unix nanoseconds.
pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], eof: bool) -> Vec<(Tag, Vec<u8>)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        let mut emit = |t: Tag, c: &[u8]| out.push((t, c.to_vec()));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        if eof {
            s.finish(&mut emit);
        }
        out
    }

    #[test]
    fn timestamp_keeps_nine_digits() {
        let mut out = Vec::new();
        format_timestamp(&mut out, 1_475_712_429_669_794_202);
        assert_eq!(out, b"2016-10-06T00:07:09.669794202Z");
        out.clear();
        format_timestamp(&mut out, 1_475_712_429_000_000_000);
        assert_eq!(out, b"2016-10-06T00:07:09.000000000Z");
        out.clear();
        format_timestamp(&mut out, 0);
        assert_eq!(out, b"1970-01-01T00:00:00.000000000Z");
        out.clear();
        // Leap day, end of day.
        format_timestamp(&mut out, 951_868_799_999_999_999);
        assert_eq!(out, b"2000-02-29T23:59:59.999999999Z");
    }

    #[test]
    fn record_format() {
        let mut out = Vec::new();
        format_record(&mut out, 0, Stream::Stderr, Tag::Full, b"hello");
        assert_eq!(out, b"1970-01-01T00:00:00.000000000Z stderr F hello\n");
    }

    #[test]
    fn full_lines_across_chunks() {
        let r = split(&[b"ab", b"c\nde\r\n\n", b"f"], true);
        assert_eq!(
            r,
            vec![
                (Tag::Full, b"abc".to_vec()),
                (Tag::Full, b"de".to_vec()),
                (Tag::Full, b"".to_vec()),
                (Tag::Partial, b"f".to_vec()),
            ]
        );
    }

    #[test]
    fn unterminated_without_eof_is_held() {
        assert!(split(&[b"abc"], false).is_empty());
    }

    #[test]
    fn long_lines_split_like_containerd() {
        let exact = vec![b'x'; MAX_LINE];
        let mut line = exact.clone();
        line.push(b'\n');
        assert_eq!(split(&[&line], true), vec![(Tag::Full, exact.clone())]);

        // 2*MAX + 5 bytes, fed in odd chunk sizes: P(MAX), P(MAX), F(5).
        let mut long = vec![b'y'; 2 * MAX_LINE + 5];
        long.push(b'\n');
        for chunk in [1usize, 4096, 7000, MAX_LINE + 3, long.len()] {
            let chunks: Vec<&[u8]> = long.chunks(chunk).collect();
            let r = split(&chunks, true);
            let tags: Vec<(Tag, usize)> = r.iter().map(|(t, c)| (*t, c.len())).collect();
            assert_eq!(
                tags,
                vec![
                    (Tag::Partial, MAX_LINE),
                    (Tag::Partial, MAX_LINE),
                    (Tag::Full, 5)
                ],
                "chunk size {chunk}"
            );
        }

        // Exactly MAX unterminated at EOF: one P; MAX + 1: P(MAX) then P(1).
        let r = split(&[&exact], true);
        assert_eq!(r, vec![(Tag::Partial, exact.clone())]);
        let mut plus = exact.clone();
        plus.push(b'z');
        let r = split(&[&plus], true);
        assert_eq!(
            r,
            vec![(Tag::Partial, exact), (Tag::Partial, b"z".to_vec())]
        );
    }

    #[test]
    fn pending_is_bounded() {
        let mut s = LineSplitter::new();
        let mut n = 0;
        for _ in 0..100 {
            s.feed(&[b'a'; 1000], &mut |_, _| n += 1);
            assert!(s.pending() <= MAX_LINE);
        }
        assert_eq!(n, 100_000 / MAX_LINE);
    }
}
