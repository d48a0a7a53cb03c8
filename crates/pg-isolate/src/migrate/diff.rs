//! Comparing two schema snapshots.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::snapshot::SchemaSnapshot;

/// What differs about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// Present only in the second snapshot.
    Added,
    /// Present only in the first snapshot.
    Removed,
    /// A property changed (`field` names it).
    Changed,
    /// A table has the same columns in another order (a note unless strict).
    ColumnOrder,
    /// A function body differs only in whitespace (a note unless strict).
    BodyWhitespace,
}

/// One difference between two snapshots: the object, what changed, and its
/// value before and after (the whole object for added / removed ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Difference {
    /// The object's kind (`table`, `column`, `index`, `function`, ...).
    pub kind: String,
    /// Its qualified name (`public.users.email`).
    pub object: String,
    /// What changed.
    pub change: Change,
    /// The property that changed, for [`Change::Changed`] and the notes.
    pub field: Option<String>,
    /// The value in the first snapshot (`null` when added).
    pub before: Value,
    /// The value in the second snapshot (`null` when removed).
    pub after: Value,
}

/// The differences between two snapshots, split into those that change
/// meaning and notes (column order only, whitespace-only function body
/// changes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SchemaDiff {
    /// Differences that change meaning.
    pub differences: Vec<Difference>,
    /// Differences that do not.
    pub notes: Vec<Difference>,
}

impl SchemaDiff {
    /// Whether the snapshots are identical (no differences, no notes).
    pub fn is_empty(&self) -> bool {
        self.differences.is_empty() && self.notes.is_empty()
    }

    /// Moves the notes into the differences (strict mode).
    pub fn strict(mut self) -> Self {
        self.differences.append(&mut self.notes);
        self
    }
}

impl SchemaSnapshot {
    /// The differences from `self` (before) to `after`.
    pub fn diff(&self, after: &SchemaSnapshot) -> SchemaDiff {
        let mut diff = SchemaDiff::default();
        let empty = BTreeMap::new();
        let kinds: BTreeSet<&String> = self.all().keys().chain(after.all().keys()).collect();
        for kind in kinds {
            let b = self.all().get(kind).unwrap_or(&empty);
            let a = after.all().get(kind).unwrap_or(&empty);
            let names: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for name in names {
                match (b.get(name), a.get(name)) {
                    (Some(before), None) => diff.differences.push(Difference {
                        kind: kind.clone(),
                        object: name.clone(),
                        change: Change::Removed,
                        field: None,
                        before: Value::Object(before.clone()),
                        after: Value::Null,
                    }),
                    (None, Some(after)) => diff.differences.push(Difference {
                        kind: kind.clone(),
                        object: name.clone(),
                        change: Change::Added,
                        field: None,
                        before: Value::Null,
                        after: Value::Object(after.clone()),
                    }),
                    (Some(before), Some(after)) => {
                        compare_object(&mut diff, kind, name, before, after)
                    }
                    (None, None) => {}
                }
            }
        }
        diff
    }
}

fn compare_object(
    diff: &mut SchemaDiff,
    kind: &str,
    name: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) {
    let fields: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for field in fields {
        let b = before.get(field.as_str()).unwrap_or(&Value::Null);
        let a = after.get(field.as_str()).unwrap_or(&Value::Null);
        if b == a {
            continue;
        }
        let difference = |change| Difference {
            kind: kind.to_owned(),
            object: name.to_owned(),
            change,
            field: Some(field.clone()),
            before: b.clone(),
            after: a.clone(),
        };
        match (kind, field.as_str()) {
            ("table", "columns") => {
                // Columns added or removed show up as column differences;
                // the same set in another order is only a note.
                if same_set(b, a) {
                    diff.notes.push(difference(Change::ColumnOrder));
                }
            }
            ("function" | "procedure" | "aggregate", "body")
                if squeeze(b.as_str().unwrap_or_default())
                    == squeeze(a.as_str().unwrap_or_default()) =>
            {
                diff.notes.push(difference(Change::BodyWhitespace));
            }
            _ => diff.differences.push(difference(Change::Changed)),
        }
    }
}

fn same_set(a: &Value, b: &Value) -> bool {
    match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => {
            let mut a: Vec<String> = a.iter().map(Value::to_string).collect();
            let mut b: Vec<String> = b.iter().map(Value::to_string).collect();
            a.sort();
            b.sort();
            a == b
        }
        _ => false,
    }
}

/// `text` with whitespace removed, except one space between two word
/// characters (so `a+b` and `a + b` compare equal, `ab` and `a b` do not).
fn squeeze(text: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && out.chars().next_back().is_some_and(word) && word(c) {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::squeeze;

    #[test]
    fn squeeze_ignores_layout_but_not_word_breaks() {
        assert_eq!(
            squeeze("BEGIN\n    RETURN a+b;\nEND"),
            squeeze("BEGIN RETURN a + b ; END")
        );
        assert_ne!(squeeze("RETURN ab"), squeeze("RETURN a b"));
    }
}
