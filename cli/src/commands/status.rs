//! What an operator checks first: which ledger and NATS server this runledger would use, and
//! whether they answer.

use std::time::Duration;

use runledger_ledger::postgres::redact;
use serde_json::{Value, json};

use crate::{Failure, GlobalArgs};

const TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(global: &GlobalArgs, as_json: bool) -> Result<(), Failure> {
    let database = database_status(global).await;
    let nats = nats_status(&global.nats_url).await;
    let healthy = database["reachable"] == json!(true) && nats["reachable"] == json!(true);
    if as_json {
        outln!(
            "{}",
            json!({"healthy": healthy, "database": database, "nats": nats})
        );
    } else {
        outln!(
            "database  {}  schema {}",
            redact(&global.database_url),
            global.database_schema
        );
        match database.get("error") {
            Some(e) => outln!("          unreachable: {}", e.as_str().unwrap_or_default()),
            None => outln!(
                "          reachable; {} migration(s) applied, {} pending",
                database["migrations_applied"],
                database["migrations_pending"]
            ),
        }
        outln!(
            "nats      {}",
            runledger_executor_gateway::redact_nats_url(&global.nats_url)
        );
        match nats.get("error") {
            Some(e) => outln!("          unreachable: {}", e.as_str().unwrap_or_default()),
            None => outln!(
                "          reachable; server {}, jetstream {}",
                nats["server_version"].as_str().unwrap_or("?"),
                if nats["jetstream"] == json!(true) {
                    "enabled"
                } else {
                    "DISABLED"
                }
            ),
        }
    }
    if healthy {
        Ok(())
    } else {
        Err(Failure::silent())
    }
}

async fn database_status(global: &GlobalArgs) -> Value {
    let store = match tokio::time::timeout(TIMEOUT, super::connect(global)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return json!({"reachable": false, "error": e.line()}),
        Err(_) => return json!({"reachable": false, "error": "timed out"}),
    };
    match store.migration_status().await {
        Ok((applied, pending)) => {
            json!({"reachable": true, "migrations_applied": applied, "migrations_pending": pending})
        }
        Err(e) => json!({"reachable": false, "error": e.to_string()}),
    }
}

/// Reads the INFO line a NATS server sends on connect; it names the version and JetStream.
async fn nats_status(url: &str) -> Value {
    match runledger_executor_gateway::server_info(url, TIMEOUT).await {
        Ok(info) => json!({
            "reachable": true,
            "server_version": info["version"],
            "jetstream": info["jetstream"] == json!(true),
        }),
        Err(error) => json!({"reachable": false, "error": error}),
    }
}
