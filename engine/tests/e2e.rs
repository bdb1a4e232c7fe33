//! The engine's end-to-end and store tests, one test binary. Each module below is one
//! concern's tests (`cargo test -p engine --test e2e MODULE::`); `support` holds the set-up
//! they share, `webdriver` drives Chromium for the dashboard's tests and `python` runs the
//! Python tools (Helm, Prometheus' parser, schemathesis, in-toto) some of them check with.
//!
//! One binary, not one per file: each binary linked the whole engine and `testkit` again
//! (~170 MB and seconds of linking apiece, ~85 of them), which filled CI's disk and spent
//! minutes of its two cores. Tests that start engines still take [`support::serial`], so
//! merging them changed what runs at the same time no more than the test harness's own
//! threads already did; a test that needs environment variables for an engine passes them
//! to that engine's command, never to this process (`std::env::set_var` would reach every
//! later test).

#[path = "deploy/python.rs"]
mod python;
mod support;
mod webdriver;

mod access_matrix;
mod advance;
mod agents;
mod api;
mod approvals_store;
mod cache_partitions;
mod caches;
mod chart;
mod check_runs;
mod checkout_from_mirror;
mod claims_stick;
mod cli;
mod concurrency_e2e;
mod concurrency_store;
mod dashboard;
mod dashboard_a11y;
mod dashboard_agents;
mod dashboard_approvals;
mod dashboard_dag;
mod dashboard_dispatch;
mod dashboard_failure;
mod dashboard_phone;
mod dashboard_time;
mod debug_shell;
mod dispatch_bomb;
mod dispatch_ref;
mod environments;
mod forge_roles;
mod forges;
mod fork_urls;
mod forks;
mod github_app;
mod handoff;
mod held_connection;
mod id_token_attacks;
mod id_tokens;
mod image;
mod installations;
mod issue_to_pr;
mod kubernetes_pool;
mod lifetimes;
mod live_streams;
mod llm;
mod llm_budget;
mod local_runner_death;
mod log_order;
mod log_quota;
mod loops;
mod loops_store;
mod masking;
mod mcp;
mod mcp_attacks;
mod metrics;
mod network_policy;
mod openapi;
mod outbound_wall;
mod outputs;
mod people;
mod pipelines;
mod plue_ci;
mod private_reads;
mod prompt_cli;
mod prompt_files;
mod provenance;
mod quotas;
mod real_gitea;
mod real_kube;
mod redteam;
mod redteam_dashboard;
mod reliability;
mod replay;
mod replicas;
mod rerun_failed;
mod results;
mod rollout;
mod run;
mod run_inputs;
mod run_record;
mod runner_ahead;
mod runner_identity;
mod runner_lifetimes;
mod safe_outputs;
mod shared_steps;
mod sign_in;
mod step_boundary;
mod step_containment;
mod step_options;
mod store;
mod store_forges;
mod summon;
mod threat_check;
mod token_refusals;
mod verdicts;
mod work_dir_in_memory;
