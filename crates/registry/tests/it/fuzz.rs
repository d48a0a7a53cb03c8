//! Fuzzing the document parser: whatever bytes the file holds, `read`
//! returns the document an independent decoder finds there or an error
//! naming the file, never panics, and leaves the file as it was.

use std::path::Path;

use proptest::prelude::*;
use registry::Error;
use serde_json::{Value, json};
use test_support::TestResult;
use test_support::fuzz;

use crate::{Counter, open};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("count|value|payload|data|[a-z_]{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A schema version as it might be found: right, old, newer, or not a
/// version at all.
fn schema_version() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..5).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(2.0)),
        Just(json!("2")),
        json_value(),
    ]
}

/// A valid document of the current (2) or the old (1) schema.
fn valid_document() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<u64>(), prop::collection::vec(any::<u64>(), 0..8)).prop_map(|(value, payload)| {
            json!({"schema_version": 2, "data": {"value": value, "payload": payload}})
        }),
        any::<u64>().prop_map(|count| json!({"schema_version": 1, "data": {"count": count}})),
    ]
}

fn pretty(value: Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&value).unwrap_or_default()
}

/// Bytes a document file might hold.
fn file_contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Damaged valid documents: torn writes, bit rot, hand edits.
        3 => fuzz::damaged(valid_document().prop_map(pretty)),
        // Valid syntax, wrong shapes.
        2 => (schema_version(), json_value())
            .prop_map(|(version, data)| json!({"schema_version": version, "data": data}))
            .prop_map(pretty),
        1 => json_value().prop_map(pretty),
        1 => prop::collection::btree_map("schema_version|data|[a-z]{1,4}", json_value(), 0..4)
            .prop_map(|map| pretty(Value::Object(map.into_iter().collect()))),
        // Deep nesting, against stack overflows.
        1 => (1usize..5000, prop::sample::select(vec!["[", "{\"a\":", "[{\"data\":"]))
            .prop_map(|(depth, open)| open.repeat(depth).into_bytes()),
        // Anything at all.
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// What the file holds, decoded without the store: the document, or `None`
/// when it is not a readable document of schema 1 or 2.
fn reference_decode(bytes: &[u8]) -> Option<Counter> {
    let Value::Object(envelope) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    let version = envelope.get("schema_version")?.as_u64()?;
    let data = envelope.get("data")?.clone();
    match version {
        2 => serde_json::from_value(data).ok(),
        1 => {
            let mut object = data.as_object()?.clone();
            let count = object.remove("count")?;
            object.insert("value".to_owned(), count);
            object.insert("payload".to_owned(), json!([]));
            serde_json::from_value(Value::Object(object)).ok()
        }
        _ => None,
    }
}

fn dir_listing(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn registry_documents_parse_or_fail_cleanly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.json");
    let store = open(&path)?;
    fuzz::run("registry_document", file_contents(), |bytes| {
        std::fs::write(&path, &bytes)?;
        let listing = dir_listing(dir.path())?;
        let shown = String::from_utf8_lossy(&bytes);
        let expected = reference_decode(&bytes);
        match store.read() {
            Ok(document) => {
                prop_assert_eq!(Some(document), expected, "{}", shown);
            }
            Err(error) => {
                prop_assert!(
                    expected.is_none(),
                    "{shown}: refused a valid document: {error}"
                );
                prop_assert!(
                    matches!(
                        error,
                        Error::Corrupt { .. }
                            | Error::NewerVersion { .. }
                            | Error::Migration { .. }
                    ),
                    "{shown}: unexpected error kind {error:?}"
                );
                let message = error.to_string();
                prop_assert!(
                    message.contains(&path.display().to_string()),
                    "{shown}: the error does not name the file: {message}"
                );
                // An update must not paper over the bad file either.
                let updated = store.update(|doc| {
                    doc.bump();
                    Ok::<_, Error>(())
                });
                prop_assert!(updated.is_err(), "{shown}: update replaced a bad document");
            }
        }
        prop_assert_eq!(&std::fs::read(&path)?, &bytes, "the file was changed");
        prop_assert_eq!(
            dir_listing(dir.path())?,
            listing,
            "files appeared or vanished"
        );
        Ok(())
    })?;
    Ok(())
}
