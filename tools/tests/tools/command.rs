//! The command domain: results, environment allowlist, timeout, output bound, rlimits,
//! background jobs and their end with the run.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{Domains, Scratch, code, config, ctx, refused};

#[tokio::test]
async fn run_returns_exit_code_and_output_in_the_workspace_with_an_allowlisted_environment() {
    let scratch = Scratch::new("cmd-run");
    let mut cfg = config(&scratch);
    cfg.env_allowlist = vec!["PATH".into(), "RUNLEDGER_TOOLS_TEST_ALLOWED".into()];
    // SAFETY: set before any command of this test starts; other tests read no such variable.
    unsafe {
        std::env::set_var("RUNLEDGER_TOOLS_TEST_SECRET", "hunter2");
        std::env::set_var("RUNLEDGER_TOOLS_TEST_ALLOWED", "visible");
    }
    let domains = Domains::new(&cfg).await;
    let c = ctx(None, None);
    domains
        .call(
            &c,
            "workspace_write",
            json!({ "path": "sub/data.txt", "content": "payload" }),
        )
        .await
        .unwrap();

    let out = domains
        .call(&c, "command_run", json!({ "argv": ["sh", "-c", "pwd; cat data.txt; echo err >&2; exit 3"], "cwd": "sub" }))
        .await
        .unwrap();
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["timed_out"], false);
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.ends_with("/repo/sub\npayload"), "{stdout}");
    assert_eq!(out["stderr"], "err\n");

    let env = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["env"], "env": { "GIVEN": "by-the-call" } }),
        )
        .await
        .unwrap();
    let env = env["stdout"].as_str().unwrap();
    assert!(
        env.contains("RUNLEDGER_TOOLS_TEST_ALLOWED=visible"),
        "{env}"
    );
    assert!(env.contains("GIVEN=by-the-call"));
    assert!(
        !env.contains("hunter2"),
        "a variable outside the allowlist leaked: {env}"
    );
    assert!(env.contains("HOME=") && env.contains("TMPDIR="));

    let stdin = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["cat"], "stdin": "from stdin" }),
        )
        .await
        .unwrap();
    assert_eq!(stdin["stdout"], "from stdin");

    assert_eq!(
        code(
            domains
                .call(
                    &c,
                    "command_run",
                    json!({ "argv": ["no-such-program-xyz"] })
                )
                .await
        ),
        "command_not_found"
    );
    refused(
        domains
            .call(
                &c,
                "command_run",
                json!({ "argv": ["true"], "cwd": "../.." }),
            )
            .await,
        "path_escape",
    );
    assert_eq!(
        code(domains.call(&c, "command_run", json!({ "argv": [] })).await),
        "invalid_arguments"
    );
    assert_eq!(
        code(
            domains
                .call(
                    &c,
                    "command_run",
                    json!({ "argv": ["true"], "env": { "BAD NAME": "x" } })
                )
                .await
        ),
        "invalid_arguments"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_children() {
    let scratch = Scratch::new("cmd-timeout");
    let domains = Domains::new(&config(&scratch)).await;
    let c = ctx(None, None);
    let started = Instant::now();
    let out = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["sh", "-c", "echo before; sleep 30 & sleep 30"], "timeout_secs": 1 }),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["signal"], 9);
    assert_eq!(out["stdout"], "before\n");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the background sleep kept the pipes open"
    );
}

#[tokio::test]
async fn output_is_bounded_to_its_start_and_end() {
    let scratch = Scratch::new("cmd-output");
    let mut cfg = config(&scratch);
    cfg.limits.max_output_bytes = 1000;
    let domains = Domains::new(&cfg).await;
    let c = ctx(None, None);
    let out = domains
        .call(&c, "command_run", json!({ "argv": ["sh", "-c", "echo START; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END"] }))
        .await
        .unwrap();
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["stdout_truncated"], true);
    assert_eq!(out["stdout_bytes"], 6 + 100_000 + 1 + 4);
    let text = out["stdout"].as_str().unwrap();
    assert!(text.starts_with("START\n"));
    assert!(text.ends_with("\nEND\n"));
    assert!(text.contains("bytes omitted"));
    assert!(text.len() < 1100, "{}", text.len());
}

#[tokio::test]
async fn rlimits_bound_cpu_memory_and_file_size() {
    let scratch = Scratch::new("cmd-rlimit");
    let mut cfg = config(&scratch);
    cfg.limits.cpu_seconds = 1;
    cfg.limits.memory_bytes = 256 * 1024 * 1024;
    cfg.limits.max_file_bytes = 64 * 1024;
    let domains = Domains::new(&cfg).await;
    let c = ctx(None, None);

    let started = Instant::now();
    let cpu = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["sh", "-c", "while :; do :; done"], "timeout_secs": 30 }),
        )
        .await
        .unwrap();
    assert_eq!(
        cpu["timed_out"], false,
        "the CPU limit, not the timeout, ended it"
    );
    assert!(
        matches!(cpu["signal"].as_i64(), Some(24) | Some(9)),
        "SIGXCPU or SIGKILL: {cpu}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let memory = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["dd", "if=/dev/zero", "of=/dev/null", "bs=512M", "count=1"] }),
        )
        .await
        .unwrap();
    assert_ne!(
        memory["exit_code"], 0,
        "a 512 MiB buffer under a 256 MiB address space: {memory}"
    );
    assert!(
        memory["stderr"].as_str().unwrap().contains("memory"),
        "{memory}"
    );

    let fsize = domains
        .call(
            &c,
            "command_run",
            json!({ "argv": ["dd", "if=/dev/zero", "of=big.bin", "bs=1M", "count=1"] }),
        )
        .await
        .unwrap();
    assert_eq!(fsize["signal"], 25, "SIGXFSZ: {fsize}");
    let listed = domains.call(&c, "workspace_list", json!({})).await.unwrap();
    let size = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "big.bin")
        .unwrap()["size"]
        .as_u64()
        .unwrap();
    assert!(size <= 64 * 1024, "{size}");
}

#[tokio::test]
async fn background_jobs_start_report_and_are_killed() {
    let scratch = Scratch::new("cmd-jobs");
    let mut cfg = config(&scratch);
    cfg.limits.max_jobs_per_run = 2;
    let domains = Domains::new(&cfg).await;
    let c = ctx(None, None);

    let started = domains
        .call(
            &c,
            "command_start",
            json!({ "argv": ["sh", "-c", "echo ready; exec sleep 60"] }),
        )
        .await
        .unwrap();
    let job = started["job_id"].as_str().unwrap().to_owned();
    assert_eq!(job, "job-1");
    let mut status = json!(null);
    for _ in 0..50 {
        status = domains
            .call(&c, "command_status", json!({ "job_id": job }))
            .await
            .unwrap();
        if status["stdout"] == "ready\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["stdout"], "ready\n");
    assert_eq!(status["running"], true);

    let quick = domains
        .call(
            &c,
            "command_start",
            json!({ "argv": ["sh", "-c", "exit 7"] }),
        )
        .await
        .unwrap();
    let quick = quick["job_id"].as_str().unwrap().to_owned();
    let mut done = json!(null);
    for _ in 0..50 {
        done = domains
            .call(&c, "command_status", json!({ "job_id": quick }))
            .await
            .unwrap();
        if done["running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["exit_code"], 7);

    // Two running jobs at most (the ended one does not count).
    let second = domains
        .call(&c, "command_start", json!({ "argv": ["sleep", "60"] }))
        .await
        .unwrap();
    assert_eq!(
        code(
            domains
                .call(&c, "command_start", json!({ "argv": ["sleep", "60"] }))
                .await
        ),
        "too_many_jobs"
    );

    let killed = domains
        .call(&c, "command_kill", json!({ "job_id": job }))
        .await
        .unwrap();
    assert_eq!(killed["was_running"], true);
    assert_eq!(killed["signal_sent"], "TERM");
    let mut after = json!(null);
    for _ in 0..50 {
        after = domains
            .call(&c, "command_status", json!({ "job_id": job }))
            .await
            .unwrap();
        if after["running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after["running"], false);
    assert_eq!(after["signal"], 15);

    // Another run sees none of these jobs.
    let other = ctx(None, None);
    assert_eq!(
        code(
            domains
                .call(&other, "command_status", json!({ "job_id": job }))
                .await
        ),
        "unknown_job"
    );

    // The run's end kills what is left: this job would leave a marker a second from now.
    domains
        .call(
            &c,
            "command_kill",
            json!({ "job_id": second["job_id"], "signal": "KILL" }),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        let s = domains
            .call(&c, "command_status", json!({ "job_id": second["job_id"] }))
            .await
            .unwrap();
        if s["running"] == false {
            assert_eq!(s["signal"], 9);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marker = scratch.path().join("marker");
    let late = domains
        .call(
            &c,
            "command_start",
            json!({ "argv": ["sh", "-c", format!("sleep 1; touch {}", marker.display())] }),
        )
        .await
        .unwrap();
    domains.run_finished(c.run_id, false);
    assert_eq!(
        code(
            domains
                .call(&c, "command_status", json!({ "job_id": late["job_id"] }))
                .await
        ),
        "unknown_job"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!marker.exists(), "the job outlived its run");
}
