//! Prompt composition of a task node, in this order:
//!
//! 1. `agent.system` (the system prompt),
//! 2. `agent.role` (`You act as: <role>.`),
//! 3. `agent.skills`, one fragment each in list order (`Skill: <skill>`),
//! 4. the node's `prompt`,
//! 5. the node's `additional_prompt`.
//!
//! 1-3 form the system part, sent as the provider's system prompt before the runtime's own
//! instruction (answer with JSON, the output schema); 4-5 form the user prompt, separated by a
//! blank line. `prompt` and `additional_prompt` are templates filled from the input context;
//! the agent's fragments are sent as written. A node without `agent:` and `additional_prompt`
//! sends exactly its rendered `prompt`, as before agents existed.

use runledger_contracts::digest::Digest;
use runledger_contracts::flowchart::Node;
use serde_json::{Value, json};

use crate::provider::render_prompt;

/// The two parts of what a node run says to its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposedPrompt {
    /// The agent's system part (steps 1-3), when the node has any of them.
    pub system: Option<String>,
    /// The user prompt (steps 4-5).
    pub user: String,
}

impl ComposedPrompt {
    /// blake3 of the canonical JSON `{system, user}`: which prompt produced an output.
    pub fn digest(&self) -> Digest {
        crate::executor::hash_of(&json!({ "system": self.system, "user": self.user }))
    }
}

/// Composes the prompt of `node` for the input context `context`.
pub fn compose(node: &Node, context: &Value) -> ComposedPrompt {
    let mut system: Vec<String> = Vec::new();
    if let Some(agent) = &node.agent {
        if let Some(text) = &agent.system {
            system.push(text.clone());
        }
        if let Some(role) = &agent.role {
            system.push(format!("You act as: {role}."));
        }
        for skill in &agent.skills {
            system.push(format!("Skill: {skill}"));
        }
    }
    let mut user = render_prompt(node.prompt.as_deref().unwrap_or_default(), context);
    if let Some(extra) = &node.additional_prompt {
        let extra = render_prompt(extra, context);
        if !extra.is_empty() {
            if !user.is_empty() {
                user.push_str("\n\n");
            }
            user.push_str(&extra);
        }
    }
    ComposedPrompt {
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        user,
    }
}

#[cfg(test)]
mod tests {
    use runledger_contracts::flowchart::{AgentDoc, NodeType};

    use super::*;

    #[test]
    fn fragments_come_in_the_documented_order() {
        let mut node = Node::new("fix", NodeType::Task);
        node.prompt = Some("Fix {{ inputs.path }}.".into());
        node.additional_prompt = Some("Keep the diff small.".into());
        node.agent = Some(AgentDoc {
            system: Some("You are careful.".into()),
            role: Some("reviewer".into()),
            skills: vec!["rust".into(), "git".into()],
        });
        let p = compose(&node, &json!({ "inputs": { "path": "src/lib.rs" } }));
        assert_eq!(
            p.system.as_deref(),
            Some("You are careful.\n\nYou act as: reviewer.\n\nSkill: rust\n\nSkill: git")
        );
        assert_eq!(p.user, "Fix src/lib.rs.\n\nKeep the diff small.");
        let plain = Node {
            agent: None,
            additional_prompt: None,
            ..node
        };
        let q = compose(&plain, &json!({ "inputs": { "path": "a" } }));
        assert_eq!((q.system, q.user.as_str()), (None, "Fix a."));
        assert_ne!(p.digest(), compose(&plain, &json!({})).digest());
    }
}
