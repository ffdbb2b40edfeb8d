//! What the tool domains are configured with: where workspaces live, the MCP registry, limits.

use std::path::PathBuf;
use std::time::Duration;

/// Configuration of [`crate::domains`]. `Default` gives workspaces under the system temp dir,
/// the MCP registry `./.runledger/mcp.json` and the limits of [`Limits::default`].
#[derive(Debug, Clone)]
pub struct ToolsConfig {
    /// Parent of every run's workspace directory (`<root>/<run_id>/`).
    pub workspace_root: PathBuf,
    /// The MCP server registry file; `None`: no MCP domains.
    pub mcp_registry: Option<PathBuf>,
    /// Who this executor host is, written into each workspace it creates; a host that finds a
    /// run's workspace created by another (a shared root) refuses to use it. Default: the host
    /// name, so a restarted executor on the same host takes its runs' workspaces back.
    pub instance_id: String,
    /// Author and committer of commits and annotated tags.
    pub git_identity: GitIdentity,
    /// Names of the executor's environment variables a command may see (values are read when
    /// the command starts). Nothing else of the executor's environment reaches a command.
    pub env_allowlist: Vec<String>,
    pub limits: Limits,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            workspace_root: std::env::temp_dir().join("runledger-workspaces"),
            mcp_registry: Some(PathBuf::from(".runledger/mcp.json")),
            instance_id: host_name(),
            git_identity: GitIdentity::default(),
            env_allowlist: ["PATH", "LANG", "LC_ALL", "TZ", "CARGO_HOME", "RUSTUP_HOME"]
                .into_iter()
                .map(String::from)
                .collect(),
            limits: Limits::default(),
        }
    }
}

/// The identity git records for the agent's commits and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitIdentity {
    pub name: String,
    pub email: String,
}

impl Default for GitIdentity {
    fn default() -> Self {
        GitIdentity {
            name: "runledger agent".into(),
            email: "agent@runledger.invalid".into(),
        }
    }
}

/// Bounds on what one call may read, write, print or consume.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes `workspace_read` returns per call (a larger file is read in pages).
    pub max_read_bytes: u64,
    /// Largest content `workspace_write` accepts and largest file `workspace_apply_patch` edits.
    pub max_write_bytes: u64,
    /// Most entries `workspace_list` returns.
    pub max_list_entries: usize,
    /// Most matches `workspace_search` returns; files larger than `max_read_bytes` are skipped.
    pub max_search_matches: usize,
    /// Most bytes of git output (diff, show, log) returned.
    pub max_git_output_bytes: usize,
    /// How long one git command may take (clone and push included).
    pub git_timeout: Duration,
    /// `command_run`'s timeout when the call names none, and the most it may name.
    pub command_timeout: Duration,
    pub max_command_timeout: Duration,
    /// How long a background job may live before it is killed.
    pub job_lifetime: Duration,
    /// Most background jobs of one run at a time.
    pub max_jobs_per_run: usize,
    /// Bytes of stdout and of stderr kept per command (half from the start, half from the end).
    pub max_output_bytes: usize,
    /// RLIMIT_CPU of commands, seconds of CPU time.
    pub cpu_seconds: u64,
    /// RLIMIT_AS of commands, bytes of address space.
    pub memory_bytes: u64,
    /// RLIMIT_NPROC of commands (per user; not enforced for root).
    pub max_processes: u64,
    /// RLIMIT_FSIZE of commands: the largest file a command may write.
    pub max_file_bytes: u64,
    /// How long an MCP server may take to start, answer `tools/list`, or serve one call.
    pub mcp_timeout: Duration,
    /// How long one request to a forge (`git_pr_create`) may take.
    pub forge_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_read_bytes: 256 * 1024,
            max_write_bytes: 4 * 1024 * 1024,
            max_list_entries: 2_000,
            max_search_matches: 200,
            max_git_output_bytes: 256 * 1024,
            git_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(120),
            max_command_timeout: Duration::from_secs(1_800),
            job_lifetime: Duration::from_secs(3_600),
            max_jobs_per_run: 8,
            max_output_bytes: 64 * 1024,
            cpu_seconds: 600,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            max_processes: 256,
            max_file_bytes: 1024 * 1024 * 1024,
            mcp_timeout: Duration::from_secs(60),
            forge_timeout: Duration::from_secs(30),
        }
    }
}

/// The host's name (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else `localhost`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
