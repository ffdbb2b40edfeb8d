//! The workspace domain: the manager (clone, teardown, keep on failure, another host's
//! workspace), every file tool, confinement, bounds, apply_patch.

use serde_json::json;

use crate::{Domains, Scratch, code, config, ctx, refused, source, source_repo};

#[tokio::test]
async fn workspace_is_cloned_at_first_call_and_removed_when_the_run_ends() {
    let scratch = Scratch::new("ws-life");
    let repo = source_repo(&scratch);
    let config = config(&scratch);
    let domains = Domains::new(&config).await;
    let c = ctx(Some(source(&repo)), None);
    let run_dir = config.workspace_root.join(c.run_id.to_string());
    assert!(
        !run_dir.exists(),
        "nothing is created before the first call"
    );

    let read = domains
        .call(&c, "workspace_read", json!({ "path": "README.md" }))
        .await
        .unwrap();
    assert_eq!(read["content"], "# demo\n\nHello.\n");
    assert!(run_dir.join("repo/.git").is_dir());
    assert!(run_dir.join("owner.json").is_file());

    domains.run_finished(c.run_id, false);
    assert!(
        !run_dir.exists(),
        "the workspace is removed at the run's end"
    );
}

#[tokio::test]
async fn a_failed_run_keeps_its_workspace_only_with_keep_on_failure() {
    let scratch = Scratch::new("ws-keep");
    let repo = source_repo(&scratch);
    let config = config(&scratch);
    let domains = Domains::new(&config).await;

    let mut kept = source(&repo);
    kept.keep_on_failure = true;
    let c = ctx(Some(kept), None);
    domains.call(&c, "workspace_list", json!({})).await.unwrap();
    domains.run_finished(c.run_id, true);
    let dir = config.workspace_root.join(c.run_id.to_string());
    assert!(dir.join("repo/README.md").is_file(), "kept for inspection");

    let c2 = ctx(Some(source(&repo)), None);
    domains
        .call(&c2, "workspace_list", json!({}))
        .await
        .unwrap();
    domains.run_finished(c2.run_id, true);
    assert!(!config.workspace_root.join(c2.run_id.to_string()).exists());

    // A completed run's workspace goes even with keep_on_failure.
    let mut kept = source(&repo);
    kept.keep_on_failure = true;
    let c3 = ctx(Some(kept), None);
    domains
        .call(&c3, "workspace_list", json!({}))
        .await
        .unwrap();
    domains.run_finished(c3.run_id, false);
    assert!(!config.workspace_root.join(c3.run_id.to_string()).exists());
}

#[tokio::test]
async fn a_ref_is_checked_out_and_a_bad_source_fails_clearly() {
    let scratch = Scratch::new("ws-ref");
    let repo = source_repo(&scratch);
    crate::git(&repo, &["switch", "--quiet", "-c", "feature"]);
    std::fs::write(repo.join("FEATURE"), "yes\n").unwrap();
    crate::git(&repo, &["add", "."]);
    crate::git(&repo, &["commit", "--quiet", "-m", "feature"]);
    crate::git(&repo, &["switch", "--quiet", "main"]);
    let domains = Domains::new(&config(&scratch)).await;

    let mut on_feature = source(&repo);
    on_feature.git_ref = Some("feature".into());
    let c = ctx(Some(on_feature), None);
    let read = domains
        .call(&c, "workspace_read", json!({ "path": "FEATURE" }))
        .await
        .unwrap();
    assert_eq!(read["content"], "yes\n");

    let c = ctx(Some(source(&repo)), None);
    assert_eq!(
        code(
            domains
                .call(&c, "workspace_read", json!({ "path": "FEATURE" }))
                .await
        ),
        "not_found"
    );

    let mut missing = source(&repo);
    missing.repo = scratch.path().join("nope").display().to_string();
    let c = ctx(Some(missing), None);
    assert_eq!(
        code(domains.call(&c, "workspace_list", json!({})).await),
        "workspace_bootstrap_failed"
    );

    // Without a source: an empty repository.
    let c = ctx(None, None);
    let listed = domains.call(&c, "workspace_list", json!({})).await.unwrap();
    assert_eq!(listed["entries"], json!([]));
    let status = domains.call(&c, "git_status", json!({})).await.unwrap();
    assert_eq!(status["clean"], true);
}

#[tokio::test]
async fn another_hosts_workspace_is_refused_and_left_alone() {
    let scratch = Scratch::new("ws-elsewhere");
    let repo = source_repo(&scratch);
    let first = config(&scratch);
    let mut second = config(&scratch);
    second.instance_id = "other-host".into();
    let a = Domains::new(&first).await;
    let b = Domains::new(&second).await;
    let c = ctx(Some(source(&repo)), None);
    a.call(
        &c,
        "workspace_write",
        json!({ "path": "notes.txt", "content": "from a" }),
    )
    .await
    .unwrap();

    refused(
        b.call(&c, "workspace_read", json!({ "path": "notes.txt" }))
            .await,
        "workspace_elsewhere",
    );
    b.run_finished(c.run_id, false);
    let dir = first.workspace_root.join(c.run_id.to_string());
    assert!(
        dir.join("repo/notes.txt").is_file(),
        "another host's end of run does not remove it"
    );

    // The same host after a restart (a new manager) takes it back as it was.
    let restarted = Domains::new(&first).await;
    let read = restarted
        .call(&c, "workspace_read", json!({ "path": "notes.txt" }))
        .await
        .unwrap();
    assert_eq!(read["content"], "from a");
    restarted.run_finished(c.run_id, false);
    assert!(!dir.exists());
}

#[tokio::test]
async fn file_tools_write_read_list_move_copy_delete_chmod_and_search() {
    let scratch = Scratch::new("ws-files");
    let repo = source_repo(&scratch);
    let domains = Domains::new(&config(&scratch)).await;
    let c = ctx(Some(source(&repo)), None);
    let call = |name: &'static str, args| domains.call(&c, name, args);

    let written = call(
        "workspace_write",
        json!({ "path": "docs/guide/intro.md", "content": "alpha\nbeta\n" }),
    )
    .await
    .unwrap();
    assert_eq!(written["bytes_written"], 11);
    call(
        "workspace_write",
        json!({ "path": "docs/guide/intro.md", "content": "gamma\n", "append": true }),
    )
    .await
    .unwrap();
    let read = call("workspace_read", json!({ "path": "docs/guide/intro.md" }))
        .await
        .unwrap();
    assert_eq!(read["content"], "alpha\nbeta\ngamma\n");
    assert_eq!(read["truncated"], false);

    let page = call(
        "workspace_read",
        json!({ "path": "docs/guide/intro.md", "offset": 6, "max_bytes": 5 }),
    )
    .await
    .unwrap();
    assert_eq!(page["content"], "beta\n");
    assert_eq!(page["next_offset"], 11);

    let made = call("workspace_mkdir", json!({ "path": "build/out" }))
        .await
        .unwrap();
    assert_eq!(made["created"], true);

    let top = call("workspace_list", json!({})).await.unwrap();
    let names: Vec<&str> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["README.md", "build", "docs", "src"],
        ".git is left out"
    );
    let all = call("workspace_list", json!({ "recursive": true }))
        .await
        .unwrap();
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "docs/guide/intro.md" && e["kind"] == "file" && e["size"] == 17)
    );
    let capped = call(
        "workspace_list",
        json!({ "recursive": true, "max_entries": 2 }),
    )
    .await
    .unwrap();
    assert_eq!(capped["entries"].as_array().unwrap().len(), 2);
    assert_eq!(capped["truncated"], true);

    call(
        "workspace_copy",
        json!({ "from": "docs", "to": "docs-copy" }),
    )
    .await
    .unwrap();
    let copied = call(
        "workspace_read",
        json!({ "path": "docs-copy/guide/intro.md" }),
    )
    .await
    .unwrap();
    assert_eq!(copied["content"], "alpha\nbeta\ngamma\n");
    assert_eq!(
        code(
            call(
                "workspace_copy",
                json!({ "from": "docs", "to": "docs-copy" })
            )
            .await
        ),
        "already_exists"
    );

    call(
        "workspace_move",
        json!({ "from": "docs-copy/guide/intro.md", "to": "moved.md" }),
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            call(
                "workspace_read",
                json!({ "path": "docs-copy/guide/intro.md" })
            )
            .await
        ),
        "not_found"
    );
    assert_eq!(
        call("workspace_read", json!({ "path": "moved.md" }))
            .await
            .unwrap()["content"],
        "alpha\nbeta\ngamma\n"
    );

    let found = call("workspace_search", json!({ "pattern": "beta" }))
        .await
        .unwrap();
    let hits: Vec<(String, u64)> = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_owned(),
                m["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            ("docs/guide/intro.md".to_owned(), 2),
            ("moved.md".to_owned(), 2)
        ]
    );
    let regex = call(
        "workspace_search",
        json!({ "pattern": "fn \\w+\\(", "regex": true, "glob": "src/**" }),
    )
    .await
    .unwrap();
    assert_eq!(regex["matches"][0]["text"], "pub fn answer() -> u32 {");
    let nocase = call(
        "workspace_search",
        json!({ "pattern": "HELLO", "case_insensitive": true }),
    )
    .await
    .unwrap();
    assert_eq!(nocase["matches"][0]["path"], "README.md");
    assert_eq!(
        crate::code(call("workspace_search", json!({ "pattern": "(", "regex": true })).await),
        "invalid_arguments"
    );

    call(
        "workspace_write",
        json!({ "path": "run.sh", "content": "#!/bin/sh\necho hi\n" }),
    )
    .await
    .unwrap();
    let chmod = call(
        "workspace_chmod",
        json!({ "path": "run.sh", "mode": "755" }),
    )
    .await
    .unwrap();
    assert_eq!(chmod["mode"], "0755");
    let ws_file = crate::config(&scratch)
        .workspace_root
        .join(c.run_id.to_string())
        .join("repo/run.sh");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ws_file).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        code(
            call(
                "workspace_chmod",
                json!({ "path": "run.sh", "mode": "4755" })
            )
            .await
        ),
        "invalid_arguments"
    );

    assert_eq!(
        code(call("workspace_delete", json!({ "path": "docs" })).await),
        "directory_not_empty"
    );
    call(
        "workspace_delete",
        json!({ "path": "docs", "recursive": true }),
    )
    .await
    .unwrap();
    assert_eq!(
        code(call("workspace_list", json!({ "path": "docs" })).await),
        "not_found"
    );
    refused(
        call("workspace_delete", json!({ "path": "." })).await,
        "path_escape",
    );
    assert_eq!(
        code(call("workspace_read", json!({ "path": "README.md", "bogus": 1 })).await),
        "invalid_arguments"
    );
}

#[tokio::test]
async fn reads_and_writes_are_bounded() {
    let scratch = Scratch::new("ws-bounds");
    let mut config = config(&scratch);
    config.limits.max_read_bytes = 1024;
    config.limits.max_write_bytes = 4096;
    let domains = Domains::new(&config).await;
    let c = ctx(None, None);
    let big = "x".repeat(3000);
    domains
        .call(
            &c,
            "workspace_write",
            json!({ "path": "big.txt", "content": big }),
        )
        .await
        .unwrap();
    let read = domains
        .call(
            &c,
            "workspace_read",
            json!({ "path": "big.txt", "max_bytes": 100000 }),
        )
        .await
        .unwrap();
    assert_eq!(read["content"].as_str().unwrap().len(), 1024);
    assert_eq!(read["truncated"], true);
    assert_eq!(read["next_offset"], 1024);
    assert_eq!(read["size"], 3000);
    let too_big = "y".repeat(5000);
    assert_eq!(
        code(
            domains
                .call(
                    &c,
                    "workspace_write",
                    json!({ "path": "huge.txt", "content": too_big })
                )
                .await
        ),
        "invalid_arguments"
    );
    // A file larger than a page is skipped by search, and counted.
    let found = domains
        .call(&c, "workspace_search", json!({ "pattern": "x" }))
        .await
        .unwrap();
    assert_eq!(found["files_skipped_too_large"], 1);
}

#[tokio::test]
async fn paths_that_escape_are_refused() {
    let scratch = Scratch::new("ws-escape");
    let repo = source_repo(&scratch);
    let config = config(&scratch);
    let domains = Domains::new(&config).await;
    let c = ctx(Some(source(&repo)), None);
    domains.call(&c, "workspace_list", json!({})).await.unwrap();
    let root = config
        .workspace_root
        .join(c.run_id.to_string())
        .join("repo");
    let outside = scratch.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(scratch.path(), root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("src", root.join("src-link")).unwrap();
    std::os::unix::fs::symlink(scratch.path().join("gone"), root.join("dangling")).unwrap();

    for (name, args) in [
        ("workspace_read", json!({ "path": "../../secret.txt" })),
        ("workspace_read", json!({ "path": "src/../../x" })),
        (
            "workspace_read",
            json!({ "path": outside.display().to_string() }),
        ),
        ("workspace_read", json!({ "path": "/etc/passwd" })),
        ("workspace_read", json!({ "path": "link-out" })),
        ("workspace_read", json!({ "path": "dir-out/secret.txt" })),
        (
            "workspace_write",
            json!({ "path": "link-out", "content": "overwrite" }),
        ),
        (
            "workspace_write",
            json!({ "path": "dir-out/new.txt", "content": "x" }),
        ),
        (
            "workspace_write",
            json!({ "path": "dangling", "content": "x" }),
        ),
        ("workspace_list", json!({ "path": "dir-out" })),
        (
            "workspace_move",
            json!({ "from": "README.md", "to": "../README.md" }),
        ),
        (
            "workspace_copy",
            json!({ "from": "dir-out/secret.txt", "to": "stolen.txt" }),
        ),
        ("workspace_delete", json!({ "path": "dir-out/secret.txt" })),
        (
            "workspace_chmod",
            json!({ "path": "../secret.txt", "mode": "777" }),
        ),
        (
            "workspace_search",
            json!({ "pattern": "secret", "path": "dir-out" }),
        ),
        ("git_diff", json!({ "paths": ["../secret.txt"] })),
    ] {
        let result = domains.call(&c, name, args.clone()).await;
        match name {
            "git_diff" => assert_eq!(code(result), "invalid_arguments", "{name} {args}"),
            _ => refused(result, "path_escape"),
        }
    }
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "top secret",
        "nothing outside changed"
    );
    assert!(!scratch.path().join("new.txt").exists());

    // A symlink that stays inside is followed.
    let read = domains
        .call(&c, "workspace_read", json!({ "path": "src-link/lib.rs" }))
        .await
        .unwrap();
    assert!(read["content"].as_str().unwrap().contains("41"));
    // .git is the git tools' business.
    refused(
        domains
            .call(&c, "workspace_read", json!({ "path": ".git/config" }))
            .await,
        "git_dir_protected",
    );
    refused(
        domains
            .call(
                &c,
                "workspace_write",
                json!({ "path": ".git/hooks/pre-commit", "content": "#!/bin/sh" }),
            )
            .await,
        "git_dir_protected",
    );
    std::os::unix::fs::symlink(".git", root.join("git-link")).unwrap();
    refused(
        domains
            .call(&c, "workspace_read", json!({ "path": "git-link/config" }))
            .await,
        "git_dir_protected",
    );
}

#[tokio::test]
async fn apply_patch_edits_creates_and_deletes_all_or_nothing() {
    let scratch = Scratch::new("ws-patch");
    let repo = source_repo(&scratch);
    let domains = Domains::new(&config(&scratch)).await;
    let c = ctx(Some(source(&repo)), None);

    let patch = "\
diff --git a/src/lib.rs b/src/lib.rs
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,3 +1,3 @@
 pub fn answer() -> u32 {
-    41
+    42
 }
diff --git a/NOTES.md b/NOTES.md
new file mode 100644
--- /dev/null
+++ b/NOTES.md
@@ -0,0 +1,2 @@
+# Notes
+Fixed the answer.
";
    let applied = domains
        .call(&c, "workspace_apply_patch", json!({ "patch": patch }))
        .await
        .unwrap();
    assert_eq!(
        applied["files"],
        json!([
            { "path": "src/lib.rs", "operation": "modify", "hunks": 1 },
            { "path": "NOTES.md", "operation": "create", "hunks": 1 },
        ])
    );
    let lib = domains
        .call(&c, "workspace_read", json!({ "path": "src/lib.rs" }))
        .await
        .unwrap();
    assert_eq!(lib["content"], "pub fn answer() -> u32 {\n    42\n}\n");
    let notes = domains
        .call(&c, "workspace_read", json!({ "path": "NOTES.md" }))
        .await
        .unwrap();
    assert_eq!(notes["content"], "# Notes\nFixed the answer.\n");

    // Plain `diff -u` style without prefixes, deleting a file.
    let delete = "--- NOTES.md\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-# Notes\n-Fixed the answer.\n";
    let applied = domains
        .call(&c, "workspace_apply_patch", json!({ "patch": delete }))
        .await
        .unwrap();
    assert_eq!(applied["files"][0]["operation"], "delete");
    assert_eq!(
        code(
            domains
                .call(&c, "workspace_read", json!({ "path": "NOTES.md" }))
                .await
        ),
        "not_found"
    );

    // The second file's hunk does not apply: the first file is not changed either.
    let bad = "\
--- a/README.md
+++ b/README.md
@@ -1,3 +1,3 @@
 # demo
 
-Hello.
+Goodbye.
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,3 +1,3 @@
 pub fn answer() -> u32 {
-    7
+    8
 }
";
    assert_eq!(
        code(
            domains
                .call(&c, "workspace_apply_patch", json!({ "patch": bad }))
                .await
        ),
        "patch_does_not_apply"
    );
    let readme = domains
        .call(&c, "workspace_read", json!({ "path": "README.md" }))
        .await
        .unwrap();
    assert_eq!(readme["content"], "# demo\n\nHello.\n");

    let escape = "--- /dev/null\n+++ b/../../evil.txt\n@@ -0,0 +1 @@\n+evil\n";
    refused(
        domains
            .call(&c, "workspace_apply_patch", json!({ "patch": escape }))
            .await,
        "path_escape",
    );
    assert_eq!(
        code(
            domains
                .call(
                    &c,
                    "workspace_apply_patch",
                    json!({ "patch": "not a diff" })
                )
                .await
        ),
        "invalid_arguments"
    );
}
