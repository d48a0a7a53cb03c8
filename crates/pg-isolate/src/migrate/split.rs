//! Splitting a script into top-level statements (for non-transactional
//! scripts, which must send `CREATE INDEX CONCURRENTLY` and friends one at a
//! time, and for locating a failing statement), and mapping server error
//! positions back to lines and columns.

use std::ops::Range;

/// One top-level statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// Byte range of the text to send (from just after the previous `;` up to
    /// but not including this statement's `;`).
    pub(crate) range: Range<usize>,
    /// Byte offset of its first token (after whitespace and comments).
    pub(crate) first_token: usize,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || b == b'$'
}

/// Splits `sql` on top-level semicolons, honouring `--` and nested `/* */`
/// comments, `'...'` and `E'...'` strings, `"..."` identifiers, dollar
/// quoting and SQL-standard `BEGIN ATOMIC ... END` function bodies. Empty
/// statements (only whitespace and comments) are dropped.
pub(crate) fn split(sql: &str) -> Vec<Statement> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut first_token: Option<usize> = None;
    // Words of the current statement, upper-cased, for the first few tokens
    // (to recognise CREATE FUNCTION / PROCEDURE) and the previous word.
    let mut words: Vec<String> = Vec::new();
    let mut atomic_depth = 0usize;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        let b = bytes[i];
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < n && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while i < n && depth > 0 {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if b != b';' || atomic_depth > 0 {
            first_token.get_or_insert(i);
        }
        match b {
            b';' if atomic_depth == 0 => {
                if let Some(first) = first_token.take() {
                    out.push(Statement {
                        range: start..i,
                        first_token: first,
                    });
                }
                words.clear();
                i += 1;
                start = i;
            }
            b'\'' => {
                // E'...' allows backslash escapes.
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !is_ident_byte(bytes[i - 2]));
                i = skip_quoted(bytes, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'$' if i == 0 || !is_ident_byte(bytes[i - 1]) => {
                // A dollar-quote tag: $$ or $tag$ (tag not starting with a digit).
                let mut j = i + 1;
                if j < n && !bytes[j].is_ascii_digit() {
                    while j < n && is_ident_byte(bytes[j]) && bytes[j] != b'$' {
                        j += 1;
                    }
                }
                if j < n && bytes[j] == b'$' {
                    let tag = &sql[i..=j];
                    match sql[j + 1..].find(tag) {
                        Some(close) => i = j + 1 + close + tag.len(),
                        None => i = n,
                    }
                } else {
                    i += 1;
                }
            }
            _ if is_ident_byte(b) => {
                let begin = i;
                while i < n && is_ident_byte(bytes[i]) {
                    i += 1;
                }
                let word = sql[begin..i].to_ascii_uppercase();
                let routine = is_routine(&words);
                if routine {
                    match word.as_str() {
                        "ATOMIC" if words.last().is_some_and(|w| w == "BEGIN") => {
                            atomic_depth += 1;
                        }
                        "CASE" if atomic_depth > 0 => atomic_depth += 1,
                        "END" if atomic_depth > 0 => atomic_depth -= 1,
                        _ => {}
                    }
                }
                if words.len() < 4 || routine {
                    words.push(word);
                } else if let Some(last) = words.last_mut() {
                    *last = word;
                }
            }
            _ => i += 1,
        }
    }
    if let Some(first) = first_token {
        out.push(Statement {
            range: start..n,
            first_token: first,
        });
    }
    out
}

/// Whether the statement's first words are `CREATE [OR REPLACE] FUNCTION`
/// or `PROCEDURE`.
fn is_routine(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().take(4).map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["CREATE", "FUNCTION" | "PROCEDURE", ..]
            | ["CREATE", "OR", "REPLACE", "FUNCTION" | "PROCEDURE", ..]
    )
}

/// The byte offset of the 1-based character position `position` (as the
/// server reports it) in `text`.
pub(crate) fn char_position_to_byte(text: &str, position: u32) -> Option<usize> {
    let index = usize::try_from(position).ok()?.checked_sub(1)?;
    text.char_indices()
        .nth(index)
        .map(|(b, _)| b)
        .or_else(|| (index == text.chars().count()).then_some(text.len()))
}

/// The 1-based line and column (in characters) of byte offset `byte`.
pub(crate) fn line_column(text: &str, byte: usize) -> (u32, u32) {
    let byte = byte.min(text.len());
    let before = text.get(..byte).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before[line_start..].chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// The index just past the quoted text opening at `bytes[open]` (a string
/// or an identifier): a doubled `quote` stands for itself, and with
/// `escapes` (an `E'...'` string) a backslash escapes the next byte. An
/// unterminated quote runs to the end.
fn skip_quoted(bytes: &[u8], open: usize, quote: u8, escapes: bool) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if escapes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql)
            .into_iter()
            .map(|s| sql[s.range].trim())
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT ';');\n-- a comment; with a semicolon\n\
                   INSERT INTO a VALUES (E'it\\'s; fine'), ('o''k;');\n\
                   /* outer /* nested; */ still; */ SELECT \"we;ird\" FROM a;\n\
                   CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;\n\
                   SELECT $$a;b$$, $1;  \n  ";
        assert_eq!(
            texts(sql),
            vec![
                "CREATE TABLE a (x text DEFAULT ';')",
                "-- a comment; with a semicolon\nINSERT INTO a VALUES (E'it\\'s; fine'), ('o''k;')",
                "/* outer /* nested; */ still; */ SELECT \"we;ird\" FROM a",
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$",
                "SELECT $$a;b$$, $1",
            ]
        );
    }

    #[test]
    fn keeps_begin_atomic_bodies_whole() {
        let sql = "CREATE OR REPLACE FUNCTION g(x int) RETURNS int LANGUAGE sql\n\
                   BEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END;\n  SELECT 3;\nEND;\n\
                   BEGIN;\nSELECT 1;\nEND;";
        let got = texts(sql);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].ends_with("SELECT 3;\nEND"), "{got:?}");
        assert_eq!(&got[1..], ["BEGIN", "SELECT 1", "END"]);
    }

    #[test]
    fn drops_empty_statements_and_finds_first_tokens() {
        let sql = ";\n  -- only a comment\n;\n\n  SELECT 1";
        let statements = split(sql);
        assert_eq!(statements.len(), 1);
        assert_eq!(&sql[statements[0].first_token..], "SELECT 1");
        assert_eq!(line_column(sql, statements[0].first_token), (5, 3));
    }

    #[test]
    fn maps_character_positions_to_lines() {
        let sql = "-- é\nSELECT nope;";
        let byte = char_position_to_byte(sql, 13).expect("in range");
        assert_eq!(&sql[byte..byte + 4], "nope");
        assert_eq!(line_column(sql, byte), (2, 8));
        assert_eq!(char_position_to_byte(sql, 0), None);
    }
}
