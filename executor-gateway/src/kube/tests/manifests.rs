//! The manifests in `ops/k8s/` parse, agree with each other and with the launcher's settings,
//! and docs/kubernetes.md names the images and variables they use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

use crate::kube::{ExecutorClass, KubeSettings};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every document of every YAML file in ops/k8s, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let dir = repo().join("ops/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "ops/k8s has its manifests: {files:?}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in ops/k8s"))
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]))
}

fn executor_settings(docs: &[(String, Value)]) -> KubeSettings {
    let config: ConfigMap = typed(find(docs, "ConfigMap", "runledger-executors"));
    let text = &config.data.unwrap()["executors.yaml"];
    KubeSettings::from_text(text)
        .unwrap_or_else(|e| panic!("ops/k8s/config.yaml executors.yaml: {e}"))
}

fn container(deployment: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

#[test]
fn every_manifest_parses_as_the_kubernetes_type_it_names() {
    let docs = documents();
    for (file, doc) in &docs {
        if file == "kustomization.yaml" {
            continue;
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: a document without a name"));
        match doc["kind"].as_str().unwrap() {
            "Namespace" => drop(typed::<Namespace>(doc)),
            "ConfigMap" => drop(typed::<ConfigMap>(doc)),
            "Secret" => drop(typed::<Secret>(doc)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
            "Role" => drop(typed::<Role>(doc)),
            "RoleBinding" => drop(typed::<RoleBinding>(doc)),
            "Deployment" => drop(typed::<Deployment>(doc)),
            "Service" => drop(typed::<Service>(doc)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "runledger", "{file}: {name}");
        }
    }
    // kustomize applies everything but the secret template.
    let kustomization = docs
        .iter()
        .find(|(f, _)| f == "kustomization.yaml")
        .unwrap();
    let listed: BTreeSet<&str> = kustomization.1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<&str> = docs
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml" && *f != "secret.example.yaml")
        .collect();
    assert_eq!(listed, files);
}

#[test]
fn the_launcher_settings_match_the_deployments_and_rbac() {
    let docs = documents();
    let settings = executor_settings(&docs);
    assert_eq!(settings.namespace, "runledger");
    assert!(
        settings.cluster_url.is_none(),
        "in the cluster the service account is used"
    );
    let env: ConfigMap = typed(find(&docs, "ConfigMap", "runledger-env"));
    let env = env.data.unwrap();
    for name in &settings.env_allowlist {
        assert!(
            env.contains_key(name),
            "{name} is allowlisted but serve's environment does not have it"
        );
    }
    for secret in &settings.env_from_secrets {
        find(&docs, "Secret", secret);
    }
    let executor_sa = settings.service_account.clone().unwrap();
    let sa: ServiceAccount = typed(find(&docs, "ServiceAccount", &executor_sa));
    assert_eq!(sa.automount_service_account_token, Some(false));

    for class in ExecutorClass::ALL {
        let c = settings.class(class).unwrap();
        let deployment: Deployment = typed(find(
            &docs,
            "Deployment",
            &format!("runledger-executor-{class}"),
        ));
        let container = container(&deployment);
        assert_eq!(
            container.image.as_deref(),
            Some(c.image_ref().as_str()),
            "{class}"
        );
        let args = container.args.clone().unwrap();
        let at = args.iter().position(|a| a == "--class").unwrap();
        assert_eq!(args[at + 1], class.as_str());
        let gpus = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("nvidia.com/gpu"));
        assert_eq!(
            gpus.map(|q| q.0.as_str()),
            (c.gpus > 0).then(|| c.gpus.to_string()).as_deref(),
            "{class}"
        );
        let env_names: Vec<&str> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env_names.contains(&"RUNLEDGER_EXECUTOR_ID"), "{class}");
        for name in &settings.env_allowlist {
            assert!(
                env_names.contains(&name.as_str()),
                "{class} pool lacks {name}"
            );
        }
        let secrets: Vec<&str> = container
            .env_from
            .iter()
            .flatten()
            .filter_map(|e| e.secret_ref.as_ref())
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, settings.env_from_secrets, "{class}");
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(executor_sa.as_str())
        );
    }

    // serve: same image, the settings mounted where RUNLEDGER_KUBE_SETTINGS says, RBAC to launch.
    let serve: Deployment = typed(find(&docs, "Deployment", "runledger-serve"));
    let serve_container = container(&serve);
    let frontier = settings.class(ExecutorClass::Frontier).unwrap();
    assert_eq!(
        serve_container.image.as_deref(),
        Some(frontier.image_ref().as_str())
    );
    assert_eq!(
        serve_container.args.as_deref(),
        Some(&["serve".to_string()][..])
    );
    let settings_path = &env["RUNLEDGER_KUBE_SETTINGS"];
    let mount = serve_container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| settings_path.starts_with(&m.mount_path))
        .unwrap();
    let volume = serve
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        "runledger-executors"
    );
    assert!(settings_path.ends_with("/executors.yaml"));

    let serve_sa = serve
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let binding: RoleBinding = typed(find(&docs, "RoleBinding", "runledger-job-launcher"));
    assert!(
        binding
            .subjects
            .unwrap()
            .iter()
            .any(|s| s.kind == "ServiceAccount" && s.name == serve_sa)
    );
    let role: Role = typed(find(&docs, "Role", &binding.role_ref.name));
    let allows = |group: &str, resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for verb in ["create", "get", "list", "delete"] {
        assert!(allows("batch", "jobs", verb), "serve may not {verb} jobs");
    }
    assert!(allows("", "pods", "list"), "serve may not list pods");
    assert!(
        !allows("", "secrets", "get"),
        "serve needs no access to secrets"
    );

    let service: Service = typed(find(&docs, "Service", "runledger"));
    let selector = service.spec.unwrap().selector.unwrap();
    let labels = serve
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service selects the serve pods"
    );
}

#[test]
fn the_secret_template_holds_no_real_keys() {
    let docs = documents();
    let secrets: Vec<&Value> = docs
        .iter()
        .filter(|(f, _)| f == "secret.example.yaml")
        .map(|(_, d)| d)
        .collect();
    assert!(!secrets.is_empty());
    for doc in secrets {
        let secret: Secret = typed(doc);
        assert!(secret.data.is_none(), "use stringData placeholders");
        for (key, value) in secret.string_data.unwrap() {
            assert!(
                value.contains("REPLACE_ME"),
                "{key} looks like a real value"
            );
        }
    }
    for (file, doc) in &docs {
        assert!(
            file == "secret.example.yaml" || doc["kind"] != "Secret",
            "{file}: secrets belong in the template only"
        );
    }
}

#[test]
fn the_docs_name_the_images_and_variables_the_manifests_use() {
    let docs = documents();
    let page = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    let settings = executor_settings(&docs);
    let mut names: BTreeSet<String> = BTreeSet::new();
    for class in ExecutorClass::ALL {
        names.insert(settings.class(class).unwrap().image_ref());
    }
    names.extend(settings.env_allowlist.iter().cloned());
    names.extend(settings.env_from_secrets.iter().cloned());
    for (_, doc) in &docs {
        match doc["kind"].as_str() {
            Some("ConfigMap") | Some("Secret") => {
                names.insert(doc["metadata"]["name"].as_str().unwrap().to_string());
                for key in ["data", "stringData"] {
                    if let Some(map) = doc[key].as_object() {
                        names.extend(map.keys().filter(|k| !k.contains('.')).cloned());
                    }
                }
            }
            Some("Deployment") => {
                let d: Deployment = typed(doc);
                names.insert(d.metadata.name.clone().unwrap());
                let c = container(&d);
                names.insert(c.image.clone().unwrap());
                names.extend(c.env.iter().flatten().map(|e| e.name.clone()));
            }
            _ => {}
        }
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !page.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/kubernetes.md does not mention {missing:?}"
    );
}
