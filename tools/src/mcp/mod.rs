//! MCP servers as tool domains. [`registry`] (always built) is the file of known servers; with
//! the `mcp` feature, [`McpDomain`] connects to one server through the official Rust SDK
//! (`rmcp`): a stdio child process ([`stdio`]) or streamable HTTP, lists its tools and serves
//! calls as `mcp__<server>__<tool>`.

pub mod registry;

#[cfg(feature = "mcp")]
mod domain;
#[cfg(feature = "mcp")]
mod stdio;

#[cfg(feature = "mcp")]
pub use domain::{McpDomain, McpTool};
pub use registry::{McpRegistry, McpServer};
