//! The domains whose tools are the operations of one tool kind: memory, plan, milestone and
//! decision. A call of `<kind>_<operation>` is that operation through [`store_call::call`] (the
//! typed operation `memory`/`plan`/`milestone` nodes run, committed under the call's
//! idempotency key); a domain may answer some of its tools without the ledger
//! (`decision_evaluate`). Each kind's module says only what differs: its tools' schemas.

use std::sync::Arc;

use runledger_contracts::agent_tool::{
    ToolCallContext, ToolCallError, ToolDomain, ToolFuture, ToolSpec,
};
use runledger_ledger::EventStore;
use serde_json::Value;

use super::{store_call, unknown_tool};
use crate::tools::ToolKind;

/// A tool a domain answers itself, without the ledger.
pub type LocalTool = fn(Value) -> Result<Value, ToolCallError>;

/// The `<kind>_*` tools of one [`ToolKind`].
pub struct StoreDomain<S> {
    store: Arc<S>,
    kind: ToolKind,
    specs: fn() -> Vec<ToolSpec>,
    local: Vec<(&'static str, LocalTool)>,
}

impl<S> StoreDomain<S> {
    /// The domain of `kind`, offering the tools `specs` describes.
    pub fn new(store: Arc<S>, kind: ToolKind, specs: fn() -> Vec<ToolSpec>) -> Self {
        Self {
            store,
            kind,
            specs,
            local: Vec::new(),
        }
    }

    /// `name` is answered by `tool`, not by an operation of the kind.
    pub fn with_local(mut self, name: &'static str, tool: LocalTool) -> Self {
        self.local.push((name, tool));
        self
    }
}

impl<S: EventStore + 'static> ToolDomain for StoreDomain<S> {
    fn domain(&self) -> &str {
        self.kind.name()
    }

    fn specs(&self) -> Vec<ToolSpec> {
        (self.specs)()
    }

    fn call<'a>(
        &'a self,
        ctx: &'a ToolCallContext,
        name: &'a str,
        arguments: Value,
    ) -> ToolFuture<'a> {
        Box::pin(async move {
            if let Some((_, tool)) = self.local.iter().find(|(local, _)| *local == name) {
                return tool(arguments);
            }
            let domain = self.kind.name();
            let operation = name
                .strip_prefix(domain)
                .and_then(|rest| rest.strip_prefix('_'))
                .ok_or_else(|| unknown_tool(domain, name))?;
            store_call::call(&*self.store, self.kind, operation, arguments, ctx).await
        })
    }
}
