//! Starting a stdio MCP server: the registry's command as a child process with a clean
//! environment (`PATH`, `HOME`, `LANG` and the server's `env_allowlist` of the executor's
//! variables), its stderr discarded, handed to rmcp's child-process transport. With `command/`
//! and `git/runner.rs`, the only places of the codebase that start processes.

use std::process::Stdio;

use rmcp::transport::TokioChildProcess;
use tokio::process::Command;

/// The transport to a freshly started server.
pub fn start(
    command: &str,
    args: &[String],
    env_allowlist: &[String],
) -> std::io::Result<TokioChildProcess> {
    let mut cmd = Command::new(command);
    cmd.args(args).env_clear().kill_on_drop(true);
    for name in ["PATH", "HOME", "LANG"]
        .into_iter()
        .chain(env_allowlist.iter().map(String::as_str))
    {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()?;
    Ok(transport)
}
