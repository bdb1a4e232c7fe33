//! The pool configuration file: `plue serve --pool kubernetes --pool-config FILE`, and
//! `plue serve --check-config --pool-config FILE`, which only parses and validates it.
//!
//! ```yaml
//! kubernetes:
//!   namespace: ci                # where runner pods live
//!   engine_url: http://plue:8600 # how pods reach the engine
//!   instance: plue               # optional; labels this engine's pods
//!   start_timeout: 2m            # optional; a pod not registered by then is replaced
//!   lease_duration: 15s          # optional; leader election among engine replicas
//!   max_start_backoff: 5m        # optional; the longest wait of a class whose pods keep
//!                                # ending before they register (then its steps fail)
//! classes:
//!   - name: small
//!     labels: {size: small}      # the runner labels this class's pods offer
//!     min_warm: 2
//!     max_runners: 20
//!     idle_timeout: 5m
//!     accept_forks: false        # optional; runs of pull requests from forks (default:
//!                                # only for a class with no labels)
//!     allow_secret_volumes: []   # optional; Secrets the pod may mount or read into env
//!     allow_config_map_volumes: [] # optional; the same for ConfigMaps
//!     allow_image_pull_secrets: [] # optional; Secrets the kubelet may pull the images with
//!     allow_runtime_classes: []  # optional; runtimeClassName values the template may pick
//!     allow_service_account: ""  # optional; the one service account the pod may run as
//!     step_network: step         # optional; `pod`: the pods' egress is confined by the
//!                                # chart's NetworkPolicy, so `none` steps run without a
//!                                # namespace of their own (see [`StepNetwork`]); which
//!                                # policies a class enforces routes steps to it
//!     engine_proxy: http://p:3128  # optional; the proxy its runners reach the engine
//!                                # through (never one of the template's environment)
//!     egress_proxy: http://plue-egress:3128  # optional, needs step_network: pod; the
//!                                # cluster's egress proxy (`plue egress-proxy`) allow-list
//!                                # steps go out through, each with its attempt's credential
//!     resolve: [api.anthropic.com] # optional, step_network: pod only; names the runners
//!                                # need besides the engine and the proxies: such pods have
//!                                # no DNS, the engine resolves these into /etc/hosts
//!     template:                  # a PodTemplateSpec merged over Plue's defaults
//!       spec:
//!         containers:
//!           - name: runner
//!             image: ghcr.io/example/plue:1
//! ```
//!
//! Invariants:
//! - [`parse`] returns a [`PoolFile`] only when every check passed; otherwise every problem
//!   found, each one line naming the field (`classes[1].max_runners: ...`) and echoing the
//!   offending value.
//! - A template may choose the image, resources, node selection and tolerations (of any
//!   taint but the control plane's), a `runtimeClassName` of `allow_runtime_classes` and
//!   the service account of `allow_service_account`, but never weakens the pod's hardening and
//!   never sets the runner container's command or arguments, which are Plue's. The pod
//!   the template makes (merged over Plue's defaults) is checked by
//!   [`crate::hardening`], each problem naming its class and field
//!   (`classes[0].template: pool class "gpu": spec.volumes[1].secret is not allowed
//!   (...)`); the pool checks again when it starts, and forces the hardening on every
//!   pod it creates.
//! - Secrets and ConfigMaps reach a pod (volumes, projected sources, environment) only
//!   when the class names them in `allow_secret_volumes` / `allow_config_map_volumes`;
//!   a runner's token Secret (`pool-…`) can never be named.
//! - Pure: no IO except [`load`] reading the file.
//!
//! Why one file past ~600 lines (a tenth of them this doc): one YAML format's parsing, every
//! problem reported field by field, in one pass; the types it produces are in `class.rs`,
//! its tests in `config_file/tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use serde::Deserialize;

pub use crate::class::{
    KubernetesSettings, PoolFile, RunnerClass, StepNetwork, RESERVED_VOLUMES, RUNNER_CONTAINER,
};
use runner::engine_client::EngineProxy;
use runner::network::capability;

use crate::hardening::{self, Listed};
use crate::scope::{check_labels, format_labels};

/// Every problem found in a configuration file, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    /// `FILE: field: message` lines.
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    kubernetes: RawKubernetes,
    #[serde(default)]
    classes: Vec<RawClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    namespace: String,
    engine_url: String,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    start_timeout: Option<RawDuration>,
    #[serde(default)]
    lease_duration: Option<RawDuration>,
    #[serde(default)]
    max_start_backoff: Option<RawDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    min_warm: usize,
    max_runners: usize,
    #[serde(default)]
    idle_timeout: Option<RawDuration>,
    #[serde(default)]
    accept_forks: Option<bool>,
    #[serde(default)]
    allow_secret_volumes: BTreeSet<String>,
    #[serde(default)]
    allow_config_map_volumes: BTreeSet<String>,
    #[serde(default)]
    allow_image_pull_secrets: BTreeSet<String>,
    #[serde(default)]
    allow_runtime_classes: BTreeSet<String>,
    #[serde(default)]
    allow_service_account: Option<String>,
    #[serde(default)]
    step_network: StepNetwork,
    #[serde(default)]
    engine_proxy: Option<String>,
    #[serde(default)]
    egress_proxy: Option<String>,
    #[serde(default)]
    resolve: Vec<String>,
    template: serde_json::Value,
}

/// `90`, `"90s"`, `"5m"`, `"1h"`, `"500ms"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

const DEFAULT_IDLE: Duration = Duration::from_secs(300);
const DEFAULT_START: Duration = Duration::from_secs(120);
const DEFAULT_LEASE: Duration = Duration::from_secs(15);
const DEFAULT_MAX_START_BACKOFF: Duration = Duration::from_secs(300);

/// Reads and validates `path`.
pub fn load(path: &Path) -> anyhow::Result<PoolFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pool configuration {}", path.display()))?;
    Ok(parse(&text, &path.display().to_string())?)
}

/// `plue serve --check-config --pool-config FILE`: validates `path`, prints what it holds
/// (stdout) or every problem (stderr), and answers the exit status.
pub fn check_command(path: &Path) -> std::process::ExitCode {
    match load(path) {
        Ok(file) => {
            println!("{}", summary(&file, &path.display().to_string()));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            eprintln!("{}: invalid pool configuration", path.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a valid file holds, one line per class.
pub fn summary(file: &PoolFile, source: &str) -> String {
    let k = &file.kubernetes;
    let mut out = format!(
        "{source}: valid: namespace {}, engine_url {}, instance {}, {} class(es)",
        k.namespace,
        k.engine_url,
        k.instance,
        file.classes.len()
    );
    for class in &file.classes {
        let image = class
            .template
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| c.name == RUNNER_CONTAINER)
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        out.push_str(&format!(
            "\n  {}: labels {}, min_warm {}, max_runners {}, idle_timeout {}s, image {image}, {}",
            class.name,
            shown_labels(&class.labels),
            class.min_warm,
            class.max_runners,
            class.idle_timeout.as_secs(),
            if class.accept_forks {
                "accepts forks"
            } else {
                "refuses forks"
            },
        ));
        // What the class's pods may read besides their own token, said where it is checked.
        for (field, names) in [
            ("allow_secret_volumes", &class.allow_secret_volumes),
            ("allow_config_map_volumes", &class.allow_config_map_volumes),
            ("allow_image_pull_secrets", &class.allow_image_pull_secrets),
            ("allow_runtime_classes", &class.allow_runtime_classes),
        ] {
            if !names.is_empty() {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                out.push_str(&format!(", {field} [{}]", names.join(", ")));
            }
        }
        if let Some(account) = &class.allow_service_account {
            out.push_str(&format!(", allow_service_account {account}"));
        }
        if class.step_network == StepNetwork::Pod {
            out.push_str(
                ", step_network pod (network=\"none\" steps confined by the pod's NetworkPolicy)",
            );
        }
        if let Some(proxy) = &class.engine_proxy {
            out.push_str(&format!(", engine_proxy {proxy}"));
        }
        if let Some(proxy) = &class.egress_proxy {
            out.push_str(&format!(
                ", egress_proxy {proxy} (allow-lists through the cluster's egress proxy)"
            ));
        }
        if !class.resolve.is_empty() {
            out.push_str(&format!(
                ", resolve [{}] (into the pods' /etc/hosts: they have no DNS)",
                class.resolve.join(", ")
            ));
        }
        out.push_str(&format!(
            "; enforces network: {}",
            class.network().describe()
        ));
    }
    out
}

/// Parses and validates a configuration file's text; `source` names it in messages.
pub fn parse(text: &str, source: &str) -> Result<PoolFile, ConfigError> {
    let fail = |message: String| ConfigError {
        problems: vec![format!("{source}: {message}")],
    };
    // Through JSON: Kubernetes objects are JSON, and quantities written as YAML numbers
    // (`cpu: 1`) become the strings Kubernetes expects.
    let yaml: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| fail(e.to_string()))?;
    let json = serde_json::to_value(yaml).map_err(|e| fail(e.to_string()))?;
    let raw: RawFile = serde_json::from_value(json).map_err(|e| fail(e.to_string()))?;
    let mut problems = Vec::new();
    let mut problem = |field: String, message: &dyn std::fmt::Display| {
        problems.push(format!("{source}: {field}: {message}"));
    };

    let k = &raw.kubernetes;
    if let Err(e) = dns_label(&k.namespace, 63) {
        problem("kubernetes.namespace".into(), &e);
    }
    if let Err(e) = engine_url(&k.engine_url) {
        problem("kubernetes.engine_url".into(), &e);
    }
    let instance = k.instance.clone().unwrap_or_else(|| "plue".into());
    if let Err(e) = dns_label(&instance, 40) {
        problem("kubernetes.instance".into(), &e);
    }
    let start_timeout = duration(k.start_timeout.as_ref(), DEFAULT_START).unwrap_or_else(|e| {
        problem("kubernetes.start_timeout".into(), &e);
        DEFAULT_START
    });
    let lease_duration = duration(k.lease_duration.as_ref(), DEFAULT_LEASE).unwrap_or_else(|e| {
        problem("kubernetes.lease_duration".into(), &e);
        DEFAULT_LEASE
    });
    let max_start_backoff = duration(k.max_start_backoff.as_ref(), DEFAULT_MAX_START_BACKOFF)
        .unwrap_or_else(|e| {
            problem("kubernetes.max_start_backoff".into(), &e);
            DEFAULT_MAX_START_BACKOFF
        });

    if raw.classes.is_empty() {
        problem(
            "classes".into(),
            &"at least one class is needed (each with name, labels, max_runners, template)",
        );
    }
    let mut classes: Vec<RunnerClass> = Vec::new();
    for (i, class) in raw.classes.into_iter().enumerate() {
        let at = |field: &str| format!("classes[{i}].{field}");
        if let Err(e) = dns_label(&class.name, 30) {
            problem(at("name"), &e);
        }
        if let Some(first) = classes.iter().position(|c| c.name == class.name) {
            problem(
                at("name"),
                &format!("'{}' is already the name of classes[{first}]", class.name),
            );
        }
        if let Err(e) = check_labels(&class.labels) {
            problem(at("labels"), &e);
        }
        if let Some(key) = class.labels.keys().find(|k| capability::is_reserved(k)) {
            problem(
                at("labels"),
                &format!(
                    "the key '{key}' is reserved: the engine works out which network policies \
                     a class enforces from its step_network (see `plue serve --check-config`)"
                ),
            );
        }
        if let Some(Err(e)) = class.engine_proxy.as_deref().map(EngineProxy::parse) {
            problem(at("engine_proxy"), &e);
        }
        if let Some(proxy) = class.egress_proxy.as_deref() {
            if let Err(e) = runner::network::egress_proxy_url(proxy.trim()) {
                problem(at("egress_proxy"), &e);
            }
            // Through the proxy the step shares its pod's network: only a NetworkPolicy
            // keeps it from going around the proxy.
            if class.step_network != StepNetwork::Pod {
                problem(
                    at("egress_proxy"),
                    &"needs `step_network: pod`: a step that goes out through the egress proxy \
                     shares its pod's network, which only the class's NetworkPolicy keeps \
                     from going around the proxy",
                );
            }
        }
        if !class.resolve.is_empty() && class.step_network != StepNetwork::Pod {
            problem(
                at("resolve"),
                &"needs `step_network: pod`: other classes' pods resolve names through the \
                  cluster's DNS",
            );
        }
        for name in &class.resolve {
            if let Err(e) = host_name(name) {
                problem(at("resolve"), &e);
            }
        }
        if let Some(first) = classes.iter().position(|c| c.labels == class.labels) {
            problem(
                at("labels"),
                &format!(
                    "classes[{first}] already offers the same labels ({}): this class would never get a step",
                    shown_labels(&class.labels)
                ),
            );
        }
        if class.max_runners == 0 || class.max_runners > 10_000 {
            problem(
                at("max_runners"),
                &format!("must be between 1 and 10000, got {}", class.max_runners),
            );
        }
        if class.min_warm > class.max_runners {
            problem(
                at("min_warm"),
                &format!(
                    "must be at most max_runners ({}), got {}",
                    class.max_runners, class.min_warm
                ),
            );
        }
        let idle_timeout =
            duration(class.idle_timeout.as_ref(), DEFAULT_IDLE).unwrap_or_else(|e| {
                problem(at("idle_timeout"), &e);
                DEFAULT_IDLE
            });
        for (field, names, listed) in [
            (
                "allow_secret_volumes",
                &class.allow_secret_volumes,
                Listed::Secrets,
            ),
            (
                "allow_config_map_volumes",
                &class.allow_config_map_volumes,
                Listed::Objects,
            ),
            (
                "allow_image_pull_secrets",
                &class.allow_image_pull_secrets,
                Listed::Secrets,
            ),
            (
                "allow_runtime_classes",
                &class.allow_runtime_classes,
                Listed::Objects,
            ),
        ] {
            for name in names {
                if let Err(e) = hardening::check_listable(name, listed) {
                    problem(at(field), &e);
                }
            }
        }
        if let Some(account) = &class.allow_service_account {
            if let Err(e) = hardening::check_listable(account, Listed::Objects) {
                problem(at("allow_service_account"), &e);
            }
        }
        let (template, parsed) = match template(class.template) {
            Ok(template) => {
                for (field, message) in template_problems(&template) {
                    problem(at(&format!("template.{field}")), &message);
                }
                (template, true)
            }
            Err(e) => {
                problem(at("template"), &e);
                (PodTemplateSpec::default(), false)
            }
        };
        let class = RunnerClass {
            accept_forks: class.accept_forks.unwrap_or(class.labels.is_empty()),
            name: class.name,
            labels: class.labels,
            min_warm: class.min_warm,
            max_runners: class.max_runners,
            idle_timeout,
            allow_secret_volumes: class.allow_secret_volumes,
            allow_config_map_volumes: class.allow_config_map_volumes,
            allow_image_pull_secrets: class.allow_image_pull_secrets,
            allow_runtime_classes: class.allow_runtime_classes,
            allow_service_account: class.allow_service_account,
            step_network: class.step_network,
            engine_proxy: class.engine_proxy.map(|p| p.trim().to_string()),
            egress_proxy: class
                .egress_proxy
                .and_then(|p| runner::network::egress_proxy_url(p.trim()).ok()),
            resolve: class.resolve,
            template,
        };
        if parsed {
            for found in hardening::problems(&class) {
                problem(
                    at("template"),
                    &format!("pool class {:?}: {found}", class.name),
                );
            }
        }
        classes.push(class);
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(PoolFile {
        kubernetes: KubernetesSettings {
            namespace: raw.kubernetes.namespace,
            engine_url: raw.kubernetes.engine_url.trim_end_matches('/').to_string(),
            instance,
            start_timeout,
            lease_duration,
            max_start_backoff,
        },
        classes,
    })
}

fn shown_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "none".into()
    } else {
        format_labels(labels)
    }
}

/// Why one field's value was refused (a line of [`ConfigError`] after `FILE: field: `).
#[derive(Debug, thiserror::Error)]
enum FieldError {
    /// Not a DNS-1123 label of at most `max` bytes.
    #[error(
        "{text:?} is not a DNS label (lower-case letters, digits and '-', at most {max}, \
         starting and ending with a letter or digit)"
    )]
    NotDnsLabel { text: String, max: usize },
    /// `kubernetes.engine_url` is not an http(s) URL with a host.
    #[error(
        "{0:?} is not an http:// or https:// URL (how runner pods reach the engine, e.g. http://plue.ci.svc:8600)"
    )]
    NotEngineUrl(String),
    /// A `resolve` entry that is not a host name.
    #[error("{0:?} is not a host name (letters, digits, '-' and '.'; no wildcard, no address)")]
    NotHostName(String),
    /// A duration outside 1 s to 7 days, or not one; holds the value as written.
    #[error(
        "expected a duration between 1s and 7 days such as 90, \"90s\", \"5m\" or \"1h\", got {0}"
    )]
    BadDuration(String),
    /// A class's `template` is not a pod template.
    #[error("{0}")]
    Template(#[from] serde_json::Error),
}

/// A DNS-1123 label of at most `max` bytes (namespaces, class and instance names).
fn dns_label(text: &str, max: usize) -> Result<(), FieldError> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::NotDnsLabel {
            text: text.to_owned(),
            max,
        })
    }
}

/// A DNS name to resolve (`resolve`): letters, digits, `-` and `.`, at most 253
/// characters; no wildcard, no address.
fn host_name(text: &str) -> Result<(), FieldError> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let fine = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && name.parse::<std::net::IpAddr>().is_err();
    if fine {
        Ok(())
    } else {
        Err(FieldError::NotHostName(text.to_owned()))
    }
}

fn engine_url(text: &str) -> Result<(), FieldError> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(host)
            if !host.is_empty()
                && !host.starts_with('/')
                && !text.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(FieldError::NotEngineUrl(text.to_owned())),
    }
}

fn duration(raw: Option<&RawDuration>, default: Duration) -> Result<Duration, FieldError> {
    let parsed = match raw {
        None => return Ok(default),
        Some(RawDuration::Seconds(s)) => Some(Duration::from_secs(*s)),
        Some(RawDuration::Text(text)) => parse_duration(text),
    };
    match parsed {
        Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(7 * 24 * 3600) => Ok(d),
        _ => Err(FieldError::BadDuration(match raw {
            Some(RawDuration::Seconds(s)) => s.to_string(),
            Some(RawDuration::Text(t)) => format!("{t:?}"),
            None => String::new(),
        })),
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// The template as Kubernetes types, numbers in resource quantities made strings.
fn template(mut value: serde_json::Value) -> Result<PodTemplateSpec, FieldError> {
    quantities_as_strings(&mut value, false);
    Ok(serde_json::from_value(value)?)
}

fn quantities_as_strings(value: &mut serde_json::Value, in_quantities: bool) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let quantities = matches!(key.as_str(), "limits" | "requests" | "overhead");
                if in_quantities {
                    if let serde_json::Value::Number(n) = v {
                        *v = serde_json::Value::String(n.to_string());
                        continue;
                    }
                }
                quantities_as_strings(v, quantities);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                quantities_as_strings(item, false);
            }
        }
        _ => {}
    }
}

/// What a template may not do besides weakening the pod (which
/// [`hardening::problems`] checks on the merged pod): Plue's container, command and volume
/// names, as (field, message) pairs.
fn template_problems(template: &PodTemplateSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |field: &str, message: &str| out.push((field.to_string(), message.to_string()));
    let Some(spec) = &template.spec else {
        bad("spec", "missing: the template needs spec.containers with a container named 'runner' and its image");
        return out;
    };
    let runner: Vec<&Container> = spec
        .containers
        .iter()
        .filter(|c| c.name == RUNNER_CONTAINER)
        .collect();
    match runner.as_slice() {
        [] => bad(
            "spec.containers",
            "no container named 'runner': name the container that runs `plue runner` 'runner'",
        ),
        [c] => {
            if c.image.as_deref().unwrap_or_default().trim().is_empty() {
                bad(
                    "spec.containers[runner].image",
                    "missing: the image that holds the plue binary",
                );
            }
            if c.command.is_some() || c.args.is_some() {
                bad(
                    "spec.containers[runner]",
                    "command and args are Plue's (`plue runner ...`); remove them",
                );
            }
            if c.stdin == Some(true) || c.tty == Some(true) {
                bad("spec.containers[runner]", "stdin and tty are not allowed");
            }
        }
        _ => bad("spec.containers", "more than one container named 'runner'"),
    }
    for (i, c) in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .enumerate()
    {
        for mount in c.volume_mounts.iter().flatten() {
            if RESERVED_VOLUMES.contains(&mount.name.as_str()) {
                bad(
                    &format!("spec.containers[{i}].volumeMounts"),
                    &format!("volume name '{}' is reserved for Plue", mount.name),
                );
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if RESERVED_VOLUMES.contains(&volume.name.as_str()) {
            bad(
                "spec.volumes",
                &format!("volume name '{}' is reserved for Plue", volume.name),
            );
        }
    }
    if let Some(policy) = &spec.restart_policy {
        if policy != "Never" {
            bad(
                "spec.restartPolicy",
                &format!("must be Never (a runner takes one step, then its pod is replaced), got {policy:?}"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
