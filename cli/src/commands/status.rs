//! What an operator checks first: which ledger and NATS server this runledger would use, and
//! whether they answer.

use std::time::Duration;

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
        match global.location() {
            Ok(runledger_ledger::LedgerLocation::Postgres(_)) => outln!(
                "database  {}  schema {}",
                database["url"].as_str().unwrap_or_default(),
                global.database_schema
            ),
            _ => outln!("database  {}", database["url"].as_str().unwrap_or_default()),
        }
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
    let location = match global.location() {
        Ok(location) => location,
        Err(e) => return json!({"reachable": false, "url": "", "error": e.line()}),
    };
    let url = location.describe();
    let backend = match location {
        runledger_ledger::LedgerLocation::Postgres(_) => "postgres",
        runledger_ledger::LedgerLocation::Sqlite(_) => "sqlite",
    };
    let opened = tokio::time::timeout(TIMEOUT, runledger_ledger::LedgerStore::open(&location));
    let store = match opened.await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            return json!({"reachable": false, "url": url, "backend": backend, "error": super::error_chain(&e)});
        }
        Err(_) => {
            return json!({"reachable": false, "url": url, "backend": backend, "error": "timed out"});
        }
    };
    match store.migration_status().await {
        Ok((applied, pending)) => json!({
            "reachable": true,
            "url": url,
            "backend": backend,
            "migrations_applied": applied,
            "migrations_pending": pending,
        }),
        Err(e) => {
            json!({"reachable": false, "url": url, "backend": backend, "error": e.to_string()})
        }
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
        Err(error) => json!({"reachable": false, "error": error.to_string()}),
    }
}
