//! Building and starting a command's process: argv without a shell, the working directory
//! confined to the workspace, an environment of allowlisted variables only, its own process
//! group (so a timeout or kill reaches its children too) and resource limits set between fork
//! and exec. With `git/runner.rs` and `mcp/stdio.rs`, the only places that start processes.

use std::collections::BTreeMap;
use std::process::Stdio;

use runledger_contracts::agent_tool::ToolCallError;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::args::{failed, failed_with, invalid};
use crate::config::ToolsConfig;
use crate::workspace::{Workspace, confine};

/// What `command_run` and `command_start` are given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// Program and arguments; no shell (use `["sh", "-c", "..."]` for one).
    pub argv: Vec<String>,
    /// Working directory relative to the workspace (default its root).
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the command's standard input (default: none, stdin is empty).
    pub stdin: Option<String>,
    /// `command_run` only: seconds before the command is killed.
    pub timeout_secs: Option<u64>,
}

/// A started command.
pub struct Started {
    pub child: Child,
    /// Its pid, which is also its process group's id.
    pub pgid: i32,
}

/// Starts the command in the run's workspace.
pub fn start(
    ws: &Workspace,
    config: &ToolsConfig,
    args: &CommandArgs,
) -> Result<Started, ToolCallError> {
    let Some(program) = args.argv.first() else {
        return Err(invalid("argv", "must name a program"));
    };
    if program.is_empty() || args.argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid(
            "argv",
            "the program must be non-empty and no argument may hold NUL",
        ));
    }
    let cwd = confine(&ws.repo, args.cwd.as_deref().unwrap_or("."))?;
    if !cwd.absolute.is_dir() {
        return Err(invalid("cwd", "is not a directory of the workspace"));
    }
    let mut cmd = Command::new(program);
    cmd.args(&args.argv[1..])
        .current_dir(&cwd.absolute)
        .env_clear()
        .stdin(if args.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in &config.env_allowlist {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.env("HOME", &ws.home).env("TMPDIR", &ws.tmp);
    for (name, value) in &args.env {
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid || value.contains('\0') {
            return Err(invalid(
                "env",
                format!("`{name}` is not a valid variable name or its value holds NUL"),
            ));
        }
        cmd.env(name, value);
    }
    let limits = rlimits(config);
    // SAFETY: the closure runs in the child between fork and exec; it only calls setrlimit,
    // which is async-signal-safe, on values computed before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (resource, value) in limits {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            failed(
                "command_not_found",
                format!("`{program}` was not found (PATH is the executor's allowlisted PATH)"),
            )
        } else {
            failed_with(
                "command_start_failed",
                format!("cannot start `{program}`: {e}"),
                e,
            )
        }
    })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| {
            failed(
                "command_start_failed",
                "the command exited before its pid was read",
            )
        })?;
    Ok(Started { child, pgid })
}

#[cfg(target_os = "linux")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_os = "linux"))]
type Resource = libc::c_int;

/// The limits to set, each no higher than the executor's own hard limit (raising one needs
/// privileges and would fail the exec).
fn rlimits(config: &ToolsConfig) -> [(Resource, libc::rlim_t); 5] {
    let l = &config.limits;
    let wanted = [
        (libc::RLIMIT_CPU, l.cpu_seconds),
        (libc::RLIMIT_AS, l.memory_bytes),
        (libc::RLIMIT_NPROC, l.max_processes),
        (libc::RLIMIT_FSIZE, l.max_file_bytes),
        (libc::RLIMIT_CORE, 0),
    ];
    wanted.map(|(resource, value)| {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let hard = if unsafe { libc::getrlimit(resource, &mut current) } == 0 {
            current.rlim_max
        } else {
            libc::RLIM_INFINITY
        };
        (resource, (value as libc::rlim_t).min(hard))
    })
}

/// Sends `signal` to the whole process group; a group that is gone is not an error.
pub fn signal_group(pgid: i32, signal: libc::c_int) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill with a negative pid signals the process group; no memory is involved.
    unsafe { libc::kill(-pgid, signal) == 0 }
}
