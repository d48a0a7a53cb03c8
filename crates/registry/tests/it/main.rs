//! Integration tests of the registry store, with real files and real
//! processes.

mod atomic;
mod concurrency;
mod fuzz;
mod storage;
mod store;

use serde::{Deserialize, Serialize};

/// The document the tests store: a counter plus a payload whose size
/// changes with every write, so a torn write could not go unnoticed.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Counter {
    pub(crate) value: u64,
    pub(crate) payload: Vec<u64>,
}

impl registry::Document for Counter {
    const VERSION: u32 = 2;

    /// Version 1 called the field `count` and had no payload.
    fn migrate(from: u32, mut data: serde_json::Value) -> Result<serde_json::Value, String> {
        match from {
            1 => {
                let object = data
                    .as_object_mut()
                    .ok_or("version 1 data is not an object")?;
                let count = object
                    .remove("count")
                    .ok_or("version 1 data has no count")?;
                object.insert("value".to_owned(), count);
                object.insert("payload".to_owned(), serde_json::Value::Array(Vec::new()));
                Ok(data)
            }
            other => Err(format!("unknown version {other}")),
        }
    }
}

impl Counter {
    /// Increments the counter and resizes the payload to match it.
    pub(crate) fn bump(&mut self) {
        self.value += 1;
        self.payload = (0..self.value % 97).collect();
    }

    /// Whether the payload matches the counter (it always should).
    pub(crate) fn is_consistent(&self) -> bool {
        self.payload.len() as u64 == self.value % 97
    }
}

pub(crate) fn open(path: &std::path::Path) -> Result<registry::Store<Counter>, registry::Error> {
    registry::Store::open(path, registry::Options::default())
}
