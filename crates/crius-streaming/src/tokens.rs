//! Single-use tokens: each URL carries one; it is removed on first use and expires unused.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::{StreamRequest, StreamingError};

/// Tokens minted but not yet used (the kubelet's own cache holds at most 1,000 too): an
/// RPC client that never connects cannot grow the map without bound.
pub const MAX_PENDING: usize = 1000;

/// 32 random bytes: unguessable, and 43 URL-safe characters.
const TOKEN_BYTES: usize = 32;

pub struct TokenCache {
    ttl: Duration,
    entries: HashMap<String, (StreamRequest, Instant)>,
    /// Tokens in the order they were minted; with one TTL that is also expiry order.
    order: VecDeque<(Instant, String)>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Stores `req` under a new random token and returns the token.
    pub fn insert(&mut self, req: StreamRequest) -> Result<String, StreamingError> {
        self.insert_at(req, Instant::now(), random_token()?)
    }

    fn insert_at(
        &mut self,
        req: StreamRequest,
        now: Instant,
        token: String,
    ) -> Result<String, StreamingError> {
        self.purge(now);
        if self.entries.len() >= MAX_PENDING {
            return Err(StreamingError::TooManyPending {
                pending: self.entries.len(),
            });
        }
        let expires = now + self.ttl;
        self.entries.insert(token.clone(), (req, expires));
        self.order.push_back((expires, token.clone()));
        Ok(token)
    }

    /// The request of `token`, removed so the token cannot be used again; `None` when the
    /// token is unknown, used or expired.
    pub fn consume(&mut self, token: &str) -> Option<StreamRequest> {
        self.consume_at(token, Instant::now())
    }

    fn consume_at(&mut self, token: &str, now: Instant) -> Option<StreamRequest> {
        self.purge(now);
        // The order queue keeps the token until it expires: that costs one bounded entry.
        self.entries.remove(token).map(|(req, _)| req)
    }

    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    fn purge(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, token)) = self.order.pop_front() {
                self.entries.remove(&token);
            }
        }
    }
}

fn random_token() -> Result<String, StreamingError> {
    let mut buf = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(StreamingError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecParams;

    fn req(id: &str) -> StreamRequest {
        StreamRequest::Exec(ExecParams {
            container_id: id.into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[test]
    fn a_token_is_used_once() {
        let mut c = TokenCache::new(Duration::from_secs(60));
        let t = c.insert(req("a")).unwrap();
        assert_eq!(t.len(), 43);
        assert_eq!(c.consume(&t), Some(req("a")));
        assert_eq!(c.consume(&t), None);
        assert_eq!(c.consume("nope"), None);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn tokens_are_distinct() {
        let mut c = TokenCache::new(Duration::from_secs(60));
        let a = c.insert(req("a")).unwrap();
        let b = c.insert(req("a")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn an_unused_token_expires() {
        let mut c = TokenCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let t = c.insert_at(req("a"), t0, "t".into()).unwrap();
        let u = c
            .insert_at(req("b"), t0 + Duration::from_secs(30), "u".into())
            .unwrap();
        assert_eq!(c.consume_at(&t, t0 + Duration::from_secs(60)), None);
        assert_eq!(c.pending(), 1);
        assert_eq!(
            c.consume_at(&u, t0 + Duration::from_secs(89)),
            Some(req("b"))
        );
    }

    #[test]
    fn pending_tokens_are_bounded_until_they_expire() {
        let mut c = TokenCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_PENDING {
            c.insert_at(req("a"), t0, format!("t{i}")).unwrap();
        }
        let err = c.insert_at(req("a"), t0, "over".into()).unwrap_err();
        assert!(
            matches!(err, StreamingError::TooManyPending { .. }),
            "{err}"
        );
        // Expired entries make room again.
        c.insert_at(req("a"), t0 + Duration::from_secs(61), "later".into())
            .unwrap();
        assert_eq!(c.pending(), 1);
    }
}
