use std::io::Read;

/// A new random 64-hex-digit id, like containerd's and CRI-O's.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    // /dev/urandom never blocks once the system is up and never runs short.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    hex::encode(bytes)
}

/// Resolves a full id or a unique prefix among `ids`.
pub(crate) fn resolve<'a>(
    prefix: &str,
    ids: impl Iterator<Item = &'a String>,
) -> Result<Option<String>, ()> {
    let mut found = None;
    for id in ids {
        if id == prefix {
            return Ok(Some(id.clone()));
        }
        if id.starts_with(prefix) {
            if found.is_some() {
                return Err(());
            }
            found = Some(id.clone());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let ids = ["abc1".to_string(), "abc2".to_string(), "def".to_string()];
        assert_eq!(resolve("def", ids.iter()), Ok(Some("def".into())));
        assert_eq!(resolve("d", ids.iter()), Ok(Some("def".into())));
        assert_eq!(resolve("abc", ids.iter()), Err(()));
        assert_eq!(resolve("abc1", ids.iter()), Ok(Some("abc1".into())));
        assert_eq!(resolve("x", ids.iter()), Ok(None));
    }
}
