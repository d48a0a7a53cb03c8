//! Connection URLs: swapping the database, hiding the password.

use crate::Error;

/// A `postgres://` or `postgresql://` URL split around its database part.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    /// `scheme://authority` (with credentials).
    base: String,
    /// `?query` or empty.
    query: String,
    /// The database named in the URL's path, if any.
    path: Option<String>,
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.base))
    }
}

impl ServerUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| invalid("expected a postgres:// or postgresql:// URL"))?;
        let scheme_len = url.len() - rest.len();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let after = &rest[authority_end..];
        let query_at = after.find('?').unwrap_or(after.len());
        let query = &after[query_at..];
        let path = after[..query_at].trim_start_matches('/');
        let path = (!path.is_empty()).then(|| path.to_owned());
        let base = url[..scheme_len + authority_end].to_owned();
        // Check that the postgres client accepts it.
        let _: postgres::Config = url
            .parse()
            .map_err(|_| invalid("not understood by the PostgreSQL client"))?;
        Ok(Self {
            base,
            query: query.to_owned(),
            path,
        })
    }

    /// The database named in the URL, if any (not percent-decoded).
    pub(crate) fn path_database(&self) -> Option<String> {
        self.path.clone()
    }

    /// The URL of `database` on this server.
    pub(crate) fn database(&self, database: &str) -> String {
        format!("{}/{}{}", self.base, percent_encode(database), self.query)
    }
}

pub(crate) fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `url` with any password replaced by `***`: the one in the user info and
/// a `password=` query parameter.
///
/// The user info is taken as the client library reads it, up to the first
/// `@` after `://` wherever it is, so a password holding `/`, `?` or `#` is
/// hidden whole; a URL that only looks as if it had user info is masked too
/// much rather than too little.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme_end + 3;
    let masked = match url[start..].find('@') {
        Some(at) => match url[start..start + at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..start + colon], &url[start + at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    let Some((head, query)) = masked.split_once('?') else {
        return masked;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://me:secret@host:5/db?x=1"),
            "postgres://me:***@host:5/db?x=1"
        );
        assert_eq!(redact("postgres://me@host/db"), "postgres://me@host/db");
        assert_eq!(redact("postgres://host"), "postgres://host");
        assert_eq!(
            redact("postgres://u:pa/hun?ter#2@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(
            redact("postgres://u@h/db?sslmode=disable&password=pw&x=1"),
            "postgres://u@h/db?sslmode=disable&password=***&x=1"
        );
    }

    #[test]
    fn database_is_swapped_and_query_kept() -> Result<(), Error> {
        let url = ServerUrl::parse("postgresql://u:p@h:1/old?sslmode=disable")?;
        assert_eq!(
            url.database("new"),
            "postgresql://u:p@h:1/new?sslmode=disable"
        );
        let bare = ServerUrl::parse("postgres://u@h")?;
        assert_eq!(bare.database("x"), "postgres://u@h/x");
        assert!(ServerUrl::parse("host=h user=u").is_err());
        Ok(())
    }
}
