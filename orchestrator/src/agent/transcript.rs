//! What a node run said to its model and got back, kept as the loop goes: the provider-neutral
//! [`Turn`]s every provider renders, the digest of each request sent, and the tools used. It is
//! the lineage of the node's artifact and, when the turn budget runs out, the failure's details.

use std::collections::BTreeSet;

use runledger_contracts::digest::Digest;
use serde_json::{Value, json};

use crate::provider::Turn;

/// Most turns kept in a failure's details; a longer transcript keeps its last ones (the full
/// record is the node run's `ToolCalled` events).
const MAX_TURNS_IN_DETAILS: usize = 40;

#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub turns: Vec<Turn>,
    /// Digest of each model request, in call order.
    pub request_digests: Vec<Digest>,
    /// Tools called (whatever the outcome), by name.
    pub tools_used: BTreeSet<String>,
    /// Tool calls made, failed ones and reused ones included.
    pub tool_calls: u32,
}

impl Transcript {
    /// Model calls made so far.
    pub fn model_calls(&self) -> u32 {
        u32::try_from(self.request_digests.len()).unwrap_or(u32::MAX)
    }

    /// The lineage recorded with the node's result: which prompt, requests and tools produced
    /// it.
    pub fn lineage(&self, prompt_digest: Digest) -> Value {
        json!({
            "turns": self.model_calls(),
            "tool_calls": self.tool_calls,
            "tools_used": self.tools_used,
            "prompt_digest": prompt_digest,
            "request_digests": self.request_digests,
        })
    }

    /// The lineage plus the conversation (its last [`MAX_TURNS_IN_DETAILS`] turns).
    pub fn with_turns(&self, prompt_digest: Digest) -> Value {
        let mut value = self.lineage(prompt_digest);
        let skip = self.turns.len().saturating_sub(MAX_TURNS_IN_DETAILS);
        value["transcript"] = json!(&self.turns[skip..]);
        value["transcript_turns_omitted"] = json!(skip);
        value
    }
}
