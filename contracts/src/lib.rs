//! Pure types of runledger, shared by every other crate. No I/O happens here.
//!
//! - [`flowchart`]: the flowchart definition users write, and its save-time validation.
//! - [`condition`]: the condition language of decision nodes.
//! - [`events`]: the versioned event catalog; [`envelope`]: how events are stored and chained.
//! - [`canonical`] and [`digest`]: RFC 8785 canonical JSON and blake3, the basis of every hash.
//! - [`storable`]: whether the ledger can store a JSON value (shared by every entry point).
//! - [`strict_json`]: typed deserializing that refuses a JSON array where an object is meant.
//! - [`ids`], [`time`]: identifiers and timestamps in their one recorded form.
//! - [`error`]: the API error envelope.
//! - [`schema`]: the JSON Schemas committed under `contracts/schemas/`.

pub mod agent_tool;
pub mod canonical;
pub mod canonical_scan;
mod canonical_write;
pub mod condition;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod events;
pub mod flowchart;
pub mod ids;
pub mod model;
pub mod rag;
pub mod schema;
pub mod storable;
pub mod strict_json;
pub mod time;
pub mod tool_catalog;

#[cfg(test)]
mod fuzz;
