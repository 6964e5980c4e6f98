//! Object helpers over k8s-openapi, shared by the API server and every controller: upstream
//! defaulting, validation with upstream messages, label and field selectors, server-side Table
//! columns, name rules, and the patch semantics (JSON, merge, strategic merge, server-side apply).
//! Pure functions over `serde_json::Value`: no I/O, no async.

#![forbid(unsafe_code)]

pub mod defaults;
pub mod field_error;
pub mod fields;
pub mod naming;
pub mod patch;
pub mod qos;
pub mod quantity;
pub mod selector;
pub mod table;
pub mod validation;
