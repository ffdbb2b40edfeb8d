//! The `command_*` tools as the model sees them.

use runledger_contracts::agent_tool::ToolSpec;
use serde_json::{Value, json};

use crate::args::{integer, object, spec, string};
use crate::config::Limits;

fn command_properties(limits: &Limits, with_timeout: bool) -> Value {
    let mut props = json!({
        "argv": {
            "type": "array", "minItems": 1, "items": { "type": "string" },
            "description": "Program and arguments, no shell (use [\"sh\", \"-c\", \"...\"] for one)."
        },
        "cwd": string("Working directory relative to the workspace (default: its root)."),
        "env": {
            "type": "object", "additionalProperties": { "type": "string" },
            "description": "Extra environment variables (the executor's own are not passed, except an allowlist such as PATH)."
        },
        "stdin": { "type": "string", "description": "Text given on standard input (default: none)." },
    });
    if with_timeout {
        props["timeout_secs"] = integer(
            &format!(
                "Seconds before the command is killed (default {}).",
                limits.command_timeout.as_secs()
            ),
            1,
            limits.max_command_timeout.as_secs(),
        );
    }
    props
}

pub fn specs(limits: &Limits) -> Vec<ToolSpec> {
    let job = json!({ "job_id": string("The id command_start returned.") });
    vec![
        spec(
            "command_run",
            &format!(
                "Run one command in the workspace to its end and return exit code, signal, timed_out and its output \
                 (stdout and stderr, each kept to {} bytes: the start and the end). Limits: timeout, CPU time, memory, \
                 processes, file size.",
                limits.max_output_bytes
            ),
            object(command_properties(limits, true), &["argv"]),
            true,
        ),
        spec(
            "command_start",
            &format!(
                "Start a command in the background (a server, a watcher); returns its job_id. At most {} running jobs \
                 per run; each is killed after {} s and when the run ends.",
                limits.max_jobs_per_run,
                limits.job_lifetime.as_secs()
            ),
            object(command_properties(limits, false), &["argv"]),
            true,
        ),
        spec(
            "command_status",
            "A background job's state (running, exit code, signal) and its output so far.",
            object(job.clone(), &["job_id"]),
            false,
        ),
        spec(
            "command_kill",
            "Send a signal (TERM by default, or KILL, INT) to a background job and its children.",
            object(
                json!({
                    "job_id": string("The id command_start returned."),
                    "signal": { "type": "string", "enum": ["TERM", "KILL", "INT"] },
                }),
                &["job_id"],
            ),
            true,
        ),
    ]
}
