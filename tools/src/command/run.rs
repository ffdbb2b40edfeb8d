//! command_run: one command to its end (or its timeout), output captured within bounds. A
//! non-zero exit, a signal or a timeout is the command's result, not a failed call: the model
//! reads `exit_code`, `signal` and `timed_out` and decides what to do.

use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger_contracts::agent_tool::ToolCallError;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::spawn::{self, CommandArgs};
use crate::args::{failed_with, invalid, parse};
use crate::config::ToolsConfig;
use crate::output::{self, BoundedOutput};
use crate::workspace::Workspace;

/// How long readers may keep going after the command and its group are gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(
    ws: &Workspace,
    config: &ToolsConfig,
    arguments: Value,
) -> Result<Value, ToolCallError> {
    let args: CommandArgs = parse(arguments)?;
    let limits = &config.limits;
    let timeout = match args.timeout_secs {
        Some(0) => return Err(invalid("timeout_secs", "must be at least 1")),
        Some(s) => Duration::from_secs(s).min(limits.max_command_timeout),
        None => limits.command_timeout,
    };
    let started = Instant::now();
    let spawn::Started { mut child, pgid } = spawn::start(ws, config, &args)?;
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), args.stdin.clone()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let stdout = Arc::new(Mutex::new(BoundedOutput::new(limits.max_output_bytes)));
    let stderr = Arc::new(Mutex::new(BoundedOutput::new(limits.max_output_bytes)));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(output::drain(out, stdout.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(output::drain(err, stderr.clone())));
    }
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => {
            spawn::signal_group(pgid, libc::SIGKILL);
            (child.wait().await, true)
        }
    };
    // Whatever the command left running in its group goes with it.
    spawn::signal_group(pgid, libc::SIGKILL);
    let status = status
        .map_err(|e| failed_with("command_wait_failed", "waiting for the command failed", e))?;
    for reader in readers {
        let _ = tokio::time::timeout(DRAIN_GRACE, reader).await;
    }
    let mut result = Map::new();
    result.insert("argv".into(), json!(args.argv));
    result.insert("exit_code".into(), json!(status.code()));
    result.insert("signal".into(), json!(status.signal()));
    result.insert("timed_out".into(), json!(timed_out));
    result.insert(
        "duration_ms".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    describe(&stdout, "stdout", &mut result);
    describe(&stderr, "stderr", &mut result);
    Ok(Value::Object(result))
}

pub(crate) fn describe(out: &Arc<Mutex<BoundedOutput>>, name: &str, into: &mut Map<String, Value>) {
    match out.lock() {
        Ok(out) => out.describe(name, into),
        Err(poisoned) => poisoned.into_inner().describe(name, into),
    }
}
