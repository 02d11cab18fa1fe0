//! The service's client REST (Batch's paths and JSON).

pub mod files;
pub mod nodes;
