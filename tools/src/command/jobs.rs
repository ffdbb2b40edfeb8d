//! Background jobs of a run: `command_start` starts one and returns its id, `command_status`
//! shows its state and output so far, `command_kill` signals it. A job lives at most
//! `Limits::job_lifetime`; the run's end kills every job it still has.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger_contracts::agent_tool::ToolCallError;
use runledger_contracts::ids::RunId;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::run::describe;
use super::spawn::{self, CommandArgs};
use crate::args::{failed, invalid, parse};
use crate::config::ToolsConfig;
use crate::output::{self, BoundedOutput};
use crate::workspace::Workspace;

/// How a job ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    duration: Duration,
    killed_at_lifetime: bool,
}

#[derive(Debug)]
struct Job {
    id: String,
    argv: Vec<String>,
    pgid: i32,
    started: Instant,
    stdout: Arc<Mutex<BoundedOutput>>,
    stderr: Arc<Mutex<BoundedOutput>>,
    ended: Mutex<Option<Ended>>,
}

impl Job {
    fn ended(&self) -> Option<Ended> {
        self.ended.lock().ok().and_then(|e| *e)
    }
}

#[derive(Debug, Default)]
struct RunJobs {
    next: u64,
    jobs: HashMap<String, Arc<Job>>,
}

/// Every run's background jobs.
#[derive(Debug, Default)]
pub struct JobTable {
    runs: Mutex<HashMap<RunId, RunJobs>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRef {
    job_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillArgs {
    job_id: String,
    /// `TERM` (default) or `KILL`.
    #[serde(default = "term")]
    signal: String,
}

fn term() -> String {
    "TERM".to_owned()
}

impl JobTable {
    /// command_start.
    pub async fn start(
        &self,
        run_id: RunId,
        ws: &Workspace,
        config: &ToolsConfig,
        arguments: Value,
    ) -> Result<Value, ToolCallError> {
        let args: CommandArgs = parse(arguments)?;
        if args.timeout_secs.is_some() {
            return Err(invalid(
                "timeout_secs",
                "background jobs live until they end, are killed, or reach the job lifetime",
            ));
        }
        let limits = &config.limits;
        {
            let runs = self
                .runs
                .lock()
                .map_err(|_| failed("internal_error", "job table poisoned"))?;
            let running = runs
                .get(&run_id)
                .map(|r| r.jobs.values().filter(|j| j.ended().is_none()).count())
                .unwrap_or(0);
            if running >= limits.max_jobs_per_run {
                return Err(failed(
                    "too_many_jobs",
                    format!(
                        "the run already has {running} running jobs (the limit); kill one first"
                    ),
                ));
            }
        }
        let spawn::Started { mut child, pgid } = spawn::start(ws, config, &args)?;
        if let (Some(mut stdin), Some(text)) = (child.stdin.take(), args.stdin.clone()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
            });
        }
        let stdout = Arc::new(Mutex::new(BoundedOutput::new(limits.max_output_bytes)));
        let stderr = Arc::new(Mutex::new(BoundedOutput::new(limits.max_output_bytes)));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(output::drain(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(output::drain(err, stderr.clone()));
        }
        let job = {
            let mut runs = self
                .runs
                .lock()
                .map_err(|_| failed("internal_error", "job table poisoned"))?;
            let entry = runs.entry(run_id).or_default();
            entry.next += 1;
            let job = Arc::new(Job {
                id: format!("job-{}", entry.next),
                argv: args.argv.clone(),
                pgid,
                started: Instant::now(),
                stdout,
                stderr,
                ended: Mutex::new(None),
            });
            entry.jobs.insert(job.id.clone(), job.clone());
            job
        };
        let lifetime = limits.job_lifetime;
        let watched = job.clone();
        tokio::spawn(async move {
            let (status, at_lifetime) = match tokio::time::timeout(lifetime, child.wait()).await {
                Ok(status) => (status, false),
                Err(_) => {
                    spawn::signal_group(watched.pgid, libc::SIGKILL);
                    (child.wait().await, true)
                }
            };
            spawn::signal_group(watched.pgid, libc::SIGKILL);
            let ended = Ended {
                code: status.as_ref().ok().and_then(|s| s.code()),
                signal: status.as_ref().ok().and_then(|s| s.signal()),
                duration: watched.started.elapsed(),
                killed_at_lifetime: at_lifetime,
            };
            if let Ok(mut slot) = watched.ended.lock() {
                *slot = Some(ended);
            }
        });
        Ok(json!({ "job_id": job.id, "argv": job.argv, "running": true }))
    }

    fn find(&self, run_id: RunId, job_id: &str) -> Result<Arc<Job>, ToolCallError> {
        let runs = self
            .runs
            .lock()
            .map_err(|_| failed("internal_error", "job table poisoned"))?;
        runs.get(&run_id)
            .and_then(|r| r.jobs.get(job_id))
            .cloned()
            .ok_or_else(|| failed("unknown_job", format!("this run has no job `{job_id}`")))
    }

    /// command_status.
    pub fn status(&self, run_id: RunId, arguments: Value) -> Result<Value, ToolCallError> {
        let args: JobRef = parse(arguments)?;
        let job = self.find(run_id, &args.job_id)?;
        let ended = job.ended();
        let mut result = Map::new();
        result.insert("job_id".into(), json!(job.id));
        result.insert("argv".into(), json!(job.argv));
        result.insert("running".into(), json!(ended.is_none()));
        result.insert("exit_code".into(), json!(ended.and_then(|e| e.code)));
        result.insert("signal".into(), json!(ended.and_then(|e| e.signal)));
        result.insert(
            "killed_at_lifetime".into(),
            json!(ended.is_some_and(|e| e.killed_at_lifetime)),
        );
        let duration = ended
            .map(|e| e.duration)
            .unwrap_or_else(|| job.started.elapsed());
        result.insert("duration_ms".into(), json!(duration.as_millis() as u64));
        describe(&job.stdout, "stdout", &mut result);
        describe(&job.stderr, "stderr", &mut result);
        Ok(Value::Object(result))
    }

    /// command_kill: signals the job's process group (a job that already ended is left alone).
    pub fn kill(&self, run_id: RunId, arguments: Value) -> Result<Value, ToolCallError> {
        let args: KillArgs = parse(arguments)?;
        let signal = match args.signal.as_str() {
            "TERM" => libc::SIGTERM,
            "KILL" => libc::SIGKILL,
            "INT" => libc::SIGINT,
            other => {
                return Err(invalid(
                    "signal",
                    format!("`{other}` is not one of TERM, KILL, INT"),
                ));
            }
        };
        let job = self.find(run_id, &args.job_id)?;
        let was_running = job.ended().is_none();
        let sent = was_running && spawn::signal_group(job.pgid, signal);
        Ok(
            json!({ "job_id": job.id, "was_running": was_running, "signal_sent": sent.then_some(args.signal) }),
        )
    }

    /// The run ended: kill its jobs and forget them.
    pub fn kill_run(&self, run_id: RunId) {
        let jobs = self
            .runs
            .lock()
            .ok()
            .and_then(|mut runs| runs.remove(&run_id));
        for job in jobs.into_iter().flat_map(|r| r.jobs.into_values()) {
            if job.ended().is_none() {
                spawn::signal_group(job.pgid, libc::SIGKILL);
            }
        }
    }
}
