//! Owned from birth: the names databases carry while they are created.
//!
//! `CREATE DATABASE` and `COMMENT ON DATABASE` cannot share a transaction,
//! so pg-isolate never creates a database under its final name. It creates
//! it under a *birth name* that is itself the owner record of the moment:
//!
//! ```text
//! <prefix>.new.<host hash><boot hash>.<pid hex>.<start time hex>.<random>
//! ```
//!
//! and then, in one transaction, writes the owner record and renames the
//! database to its final name. Whatever is killed when, a database
//! pg-isolate made is either under a birth name (naming the creating
//! process: host, boot, pid and start time) or under its final name with its
//! owner record. A birth name contains `.`, which [`crate::Server::database_name`]
//! refuses, so no name a caller asks for can fall into this namespace; gc
//! drops a database under a birth name (and without a foreign comment) once
//! the process it names is gone.

use registry::ProcessIdentity;
use sha2::{Digest, Sha256};

use crate::names::{self, MAX_NAME};
use crate::owner::host;

/// What separates the prefix from the rest of a birth name.
const MARKER: &str = ".new.";

/// The creator a birth name records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Creator {
    /// Hash of the host name (6 hex digits) followed by a hash of the boot
    /// id (6 hex digits).
    pub(crate) place: String,
    pub(crate) process: ProcessIdentity,
}

fn short_hash(text: &str) -> String {
    names::hex(&Sha256::digest(text.as_bytes())[..3])
}

/// `host hash` + `boot hash` of this host and boot.
fn here() -> String {
    let host = host();
    format!("{}{}", short_hash(&host.name), short_hash(&host.boot_id))
}

/// A fresh birth name under `prefix` for the calling process.
pub(crate) fn birth_name(prefix: &str) -> String {
    birth_name_for(prefix, ProcessIdentity::current())
}

/// A fresh birth name under `prefix` naming process `me` (a helper process
/// this one started to create databases).
pub(crate) fn birth_name_for(prefix: &str, me: ProcessIdentity) -> String {
    let stem = format!(
        "{prefix}{MARKER}{}.{:x}.{:x}.",
        here(),
        me.pid,
        me.start_time
    );
    // The random part takes what is left of the 63 bytes (12 hex digits
    // at most; with a 20-byte prefix about 6 remain).
    let room = MAX_NAME.saturating_sub(stem.len()).clamp(4, 12);
    format!("{stem}{}", &names::token()[..room])
}

/// The creator recorded in `name`, when it is a birth name.
pub(crate) fn parse(name: &str) -> Option<Creator> {
    let (prefix, rest) = name.split_once(MARKER)?;
    if prefix.contains('.') {
        return None;
    }
    let mut fields = rest.split('.');
    let place = fields.next()?;
    let pid = u32::from_str_radix(fields.next()?, 16).ok()?;
    let start_time = u64::from_str_radix(fields.next()?, 16).ok()?;
    let random = fields.next()?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if fields.next().is_some() || place.len() != 12 || !hex(place) || !hex(random) {
        return None;
    }
    Some(Creator {
        place: place.to_owned(),
        process: ProcessIdentity { pid, start_time },
    })
}

impl Creator {
    /// Whether the creating process is gone: `Some(true)` on this host when
    /// it no longer runs or belonged to an earlier boot, `None` when it ran
    /// on another host (which cannot be told from here).
    pub(crate) fn gone(&self) -> Option<bool> {
        let host = host();
        let (host_hash, boot_hash) = self.place.split_at(6);
        if host_hash != short_hash(&host.name) {
            return None;
        }
        if boot_hash != short_hash(&host.boot_id) {
            return Some(true);
        }
        Some(!self.process.is_alive())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_names_fit_and_name_their_creator() {
        for prefix in ["", "testdb_", "a_twenty_byte_prefix"] {
            let name = birth_name(prefix);
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(name.starts_with(prefix));
            let creator = parse(&name).expect("a birth name parses");
            assert_eq!(creator.process, ProcessIdentity::current());
            assert_eq!(creator.gone(), Some(false));
            assert!(crate::names::validate(&name).is_err());
        }
        assert_ne!(birth_name("p_"), birth_name("p_"));
    }

    #[test]
    fn other_names_are_not_birth_names() {
        for name in [
            "testdb_x",
            "testdb_.new.",
            "testdb_.new.abc.1.2.3",
            "a.b.new.0123456789ab.1.2.ff",
            "testdb_.new.0123456789ab.1.2.ff.extra",
            "testdb_.new.0123456789ab.zz.2.ff",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
        let mut gone = parse(&birth_name("x_")).expect("parses");
        gone.place.replace_range(6.., "000000");
        if short_hash(&host().boot_id) != "000000" {
            assert_eq!(gone.gone(), Some(true));
        }
        gone.place.replace_range(..6, "zzzzzz");
        assert_eq!(gone.gone(), None);
    }
}
