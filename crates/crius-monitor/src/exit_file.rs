//! Exit files: `<exit_dir>/<id>` holding `{"exit_code":N,"exited_at":NANOS,"oom":false}`.
//!
//! They are the source of truth after a criusd restart, even when the monitor has died, so
//! they are written atomically (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number when the process was killed by a signal.
    pub exit_code: i32,
    pub exited_at_unix_nanos: i64,
    pub oom: bool,
}

impl ExitRecord {
    fn to_json(self) -> String {
        format!(
            "{{\"exit_code\":{},\"exited_at\":{},\"oom\":{}}}\n",
            self.exit_code, self.exited_at_unix_nanos, self.oom
        )
    }

    /// Parses the JSON object written by [`write_exit_file`]. Hand-rolled so the monitor does
    /// not need serde; it accepts any whitespace and key order.
    fn from_json(s: &str) -> Option<ExitRecord> {
        Some(ExitRecord {
            exit_code: json_number(s, "exit_code")?.try_into().ok()?,
            exited_at_unix_nanos: json_number(s, "exited_at")?,
            oom: json_value(s, "oom").is_some_and(|v| v.starts_with("true")),
        })
    }
}

fn json_value<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let rest = &s[s.find(&quoted)? + quoted.len()..];
    let rest = rest.trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn json_number(s: &str, key: &str) -> Option<i64> {
    let v = json_value(s, key)?;
    let end = v
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(v.len(), |(i, _)| i);
    v[..end].parse().ok()
}

/// Writes `<exit_dir>/<id>` atomically, creating `exit_dir` if needed.
pub fn write_exit_file(exit_dir: &Path, id: &str, record: &ExitRecord) -> io::Result<()> {
    fs::create_dir_all(exit_dir)?;
    let tmp = exit_dir.join(format!(".{id}.tmp"));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(record.to_json().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, exit_dir.join(id))?;
        // The rename itself must survive a crash too.
        File::open(exit_dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads an exit file; `Ok(None)` if it does not exist (the container has not exited, or its
/// exit was never recorded).
pub fn read_exit_file(path: &Path) -> io::Result<Option<ExitRecord>> {
    let s = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    ExitRecord::from_json(&s).map(Some).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed exit file {}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ExitRecord {
            exit_code: 137,
            exited_at_unix_nanos: 1_700_000_000_000_000_001,
            oom: false,
        };
        write_exit_file(&dir.path().join("exits"), "c1", &rec).unwrap();
        let path = dir.path().join("exits/c1");
        assert_eq!(read_exit_file(&path).unwrap(), Some(rec));
        assert_eq!(
            read_exit_file(&dir.path().join("exits/none")).unwrap(),
            None
        );
    }

    #[test]
    fn parses_other_layouts() {
        let r = ExitRecord::from_json("{ \"oom\": true, \"exited_at\" : 5, \"exit_code\": -1 }");
        assert_eq!(
            r,
            Some(ExitRecord {
                exit_code: -1,
                exited_at_unix_nanos: 5,
                oom: true
            })
        );
        assert_eq!(ExitRecord::from_json("{}"), None);
    }
}
