//! The benchmark harness: measure a subject beside its baseline, report
//! percentiles and ratios.
#![deny(missing_docs)]
