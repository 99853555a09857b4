//! Lexical normalisation of tar entry names.

/// Longest normalised name accepted. Nothing in a container can open a longer path in one
/// syscall, and it bounds the depth of the tree a layer can build.
const MAX_NAME: usize = 4095;

/// Normalises `name` into `out` as `a/b/c`: no leading or trailing slash, no empty, `.` or
/// `..` components. `..` is resolved lexically (never through the filesystem, so a symlink
/// cannot change its meaning). An empty result means the layer root.
///
/// Returns the reason when the name is absolute, escapes the root, or is unusable.
pub(crate) fn normalize(name: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    if name.first() == Some(&b'/') {
        return Err("absolute paths are not allowed in a layer");
    }
    if name.contains(&0) {
        return Err("name contains a NUL byte");
    }
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err("path escapes the layer directory");
                }
                match out.iter().rposition(|b| *b == b'/') {
                    Some(i) => out.truncate(i),
                    None => out.clear(),
                }
            }
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(comp);
            }
        }
    }
    if out.len() > MAX_NAME {
        return Err("name is longer than PATH_MAX");
    }
    Ok(())
}

/// Splits a normalised name into (parent, base). The parent is empty for top-level entries.
pub(crate) fn split(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|b| *b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, &'static str> {
        let mut out = Vec::new();
        normalize(s.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn normalises_benign_names() {
        assert_eq!(norm("./a/b").unwrap(), "a/b");
        assert_eq!(norm("a//b/").unwrap(), "a/b");
        assert_eq!(norm("a/./b/../c").unwrap(), "a/c");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("a/..").unwrap(), "");
        assert_eq!(norm("...").unwrap(), "...");
    }

    #[test]
    fn rejects_escapes() {
        assert!(norm("../x").is_err());
        assert!(norm("a/../../x").is_err());
        assert!(norm("/etc/x").is_err());
        assert!(norm("./..").is_err());
        assert!(norm("a\0b").is_err());
        assert!(norm(&"a/".repeat(3000)).is_err());
    }

    #[test]
    fn splits() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
