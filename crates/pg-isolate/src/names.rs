//! Database names: validation, the 63-byte limit, quoting, unique names.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::Error;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub(crate) const MAX_NAME: usize = 63;

/// The longest accepted prefix, so generated names stay well under the limit.
pub(crate) const MAX_PREFIX: usize = 20;

/// Checks a database name or prefix: ASCII letters, digits, `_` and `-`,
/// not starting with `-`. Length is checked by the caller.
pub(crate) fn validate(name: &str) -> Result<(), Error> {
    let refuse = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return refuse("only ASCII letters, digits, `_` and `-` are allowed");
    }
    Ok(())
}

/// Validates a prefix (may be empty).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate(prefix)?;
    if prefix.len() > MAX_PREFIX {
        return Err(Error::InvalidName {
            name: prefix.to_owned(),
            reason: "a prefix may be at most 20 bytes long",
        });
    }
    Ok(())
}

/// Shortens `name` to 63 bytes with a deterministic hash suffix when longer.
pub(crate) fn fit(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_owned();
    }
    let digest = hex(&Sha256::digest(name.as_bytes()));
    // Names are ASCII (validated), so any byte index is a char boundary.
    format!("{}_{}", &name[..MAX_NAME - 13], &digest[..12])
}

/// `name` as an SQL identifier, always quoted.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal (standard_conforming_strings is on).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` escaped for use inside a `LIKE` pattern.
pub(crate) fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A short random token (12 hex digits). Uniqueness of names built from it
/// is enforced by the server (`CREATE DATABASE` fails on a duplicate and the
/// caller retries), never assumed.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let long = "a".repeat(100);
        let cut = fit(&long);
        assert_eq!(cut.len(), MAX_NAME);
        assert_eq!(cut, fit(&long));
        assert_ne!(cut, fit(&"a".repeat(101)));
        assert_eq!(fit("short"), "short");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(validate("ok_name-1").is_ok());
        for bad in ["", "-x", "a b", "a\"b", "a;b", "ü", "../x"] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(like_escape("a_b%"), "a\\_b\\%");
    }
}
