//! The metrics reference: every family the engine exports at `/metrics`, read from where
//! the registry is built (`core/src/metrics/families.rs`: each `register` call's name,
//! help text and unit, and the family's Rust type) and the label names each family is
//! recorded with (every `get_or_create(&labels([...]))` in `core/src/metrics/`).
//!
//! Read from the source with `syn` rather than from the live registry because
//! prometheus-client encodes nothing — not even the help — of a family that has no series
//! yet, which at documentation time is most of them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use syn::visit::Visit;
use syn::{Expr, ExprCall, ExprMethodCall, Lit};

use super::markdown::cell;

const METRICS_DIR: &str = "../core/src/metrics";

struct Family {
    field: String,
    name: String,
    help: String,
    unit: Option<String>,
}

pub(super) fn page() -> anyhow::Result<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(METRICS_DIR);
    let mut files = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    names.sort();
    for path in &names {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        files.push(syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?);
    }
    let mut finder = Finder::default();
    for file in &files {
        finder.visit_file(file);
    }
    anyhow::ensure!(
        !finder.families.is_empty(),
        "no registry.register(...) call found in {}",
        dir.display()
    );
    let prefix = finder.prefix.clone().unwrap_or_default();
    let mut out = String::from("# Metrics\n\n");
    out.push_str(
        "Every family `GET /metrics` exports (OpenMetrics text, no token needed), with the \
         labels it is recorded with. A counter's samples end in `_total`; a histogram's are \
         `_bucket`, `_sum` and `_count`. What to alert on is in \
         [Monitoring](../../operations/monitoring.md).\n\n",
    );
    out.push_str("| metric | type | labels | what it counts |\n|---|---|---|---|\n");
    for family in &finder.families {
        let kind = finder
            .types
            .get(&family.field)
            .map(|t| kind_of(t))
            .unwrap_or("?");
        let mut name = if prefix.is_empty() {
            family.name.clone()
        } else {
            format!("{prefix}_{}", family.name)
        };
        if let Some(unit) = &family.unit {
            name = format!("{name}_{unit}");
        }
        if kind == "counter" {
            name.push_str("_total");
        }
        let labels = finder
            .labels
            .get(&family.field)
            .map(|l| {
                l.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{name}` | {kind} | {labels} | {} |",
            cell(&family.help)
        );
    }
    Ok(out)
}

/// `counter`, `gauge` or `histogram`, from a family's Rust type.
fn kind_of(rust_type: &str) -> &'static str {
    if rust_type.contains("Histogram") {
        "histogram"
    } else if rust_type.contains("Counter") {
        "counter"
    } else if rust_type.contains("Gauge") {
        "gauge"
    } else {
        "?"
    }
}

#[derive(Default)]
struct Finder {
    prefix: Option<String>,
    families: Vec<Family>,
    /// Field of `Families` → its type, as written.
    types: BTreeMap<String, String>,
    /// Field → the label names it is recorded with, in order.
    labels: BTreeMap<String, Vec<String>>,
    /// `let set = labels([...])` seen last, by variable.
    bound: BTreeMap<String, Vec<String>>,
}

fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(s) => Some(s.value()),
            _ => None,
        },
        _ => None,
    }
}

/// `f.steps_finished.clone()` or `&FAMILIES.queued_steps` → `steps_finished`.
fn field_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Field(field) => match &field.member {
            syn::Member::Named(ident) => Some(ident.to_string()),
            syn::Member::Unnamed(_) => None,
        },
        Expr::MethodCall(call) => field_of(&call.receiver),
        Expr::Reference(r) => field_of(&r.expr),
        Expr::Paren(p) => field_of(&p.expr),
        _ => None,
    }
}

/// The label names of `labels([("status", ..), ("kind", ..)])`.
fn label_names(expr: &Expr) -> Option<Vec<String>> {
    let Expr::Call(call) = expr else { return None };
    let Expr::Path(function) = &*call.func else {
        return None;
    };
    if !function.path.is_ident("labels") {
        return None;
    }
    let Some(Expr::Array(array)) = call.args.first() else {
        return None;
    };
    Some(
        array
            .elems
            .iter()
            .filter_map(|e| match e {
                Expr::Tuple(t) => t.elems.first().and_then(string_literal),
                _ => None,
            })
            .collect(),
    )
}

impl<'ast> Visit<'ast> for Finder {
    fn visit_item_struct(&mut self, item: &'ast syn::ItemStruct) {
        if item.ident == "Families" {
            for field in &item.fields {
                if let Some(ident) = &field.ident {
                    let ty = &field.ty;
                    let text = match ty {
                        syn::Type::Path(p) => p
                            .path
                            .segments
                            .iter()
                            .map(|s| {
                                let args = match &s.arguments {
                                    syn::PathArguments::AngleBracketed(a) => a
                                        .args
                                        .iter()
                                        .filter_map(|a| match a {
                                            syn::GenericArgument::Type(syn::Type::Path(t)) => {
                                                t.path.segments.last().map(|s| s.ident.to_string())
                                            }
                                            _ => None,
                                        })
                                        .collect::<Vec<_>>()
                                        .join(","),
                                    _ => String::new(),
                                };
                                format!("{}<{args}>", s.ident)
                            })
                            .collect::<Vec<_>>()
                            .join("::"),
                        _ => String::new(),
                    };
                    self.types.insert(ident.to_string(), text);
                }
            }
        }
        syn::visit::visit_item_struct(self, item);
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if let (syn::Pat::Ident(pat), Some(init)) = (&local.pat, &local.init) {
            if let Some(names) = label_names(&init.expr) {
                self.bound.insert(pat.ident.to_string(), names);
            }
        }
        syn::visit::visit_local(self, local);
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if let Expr::Path(function) = &*call.func {
            let segments: Vec<String> = function
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            if segments == ["Registry", "with_prefix"] {
                self.prefix = call.args.first().and_then(string_literal);
            }
        }
        syn::visit::visit_expr_call(self, call);
    }

    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        let method = call.method.to_string();
        let args: Vec<&Expr> = call.args.iter().collect();
        if method == "register" || method == "register_with_unit" {
            let unit = if method == "register_with_unit" {
                args.get(2).and_then(|u| match u {
                    Expr::Path(p) => p
                        .path
                        .segments
                        .last()
                        .map(|s| s.ident.to_string().to_lowercase()),
                    _ => None,
                })
            } else {
                None
            };
            let metric = args.last().and_then(|e| field_of(e));
            if let (Some(name), Some(help), Some(field)) = (
                args.first().and_then(|e| string_literal(e)),
                args.get(1).and_then(|e| string_literal(e)),
                metric,
            ) {
                self.families.push(Family {
                    field,
                    name,
                    help,
                    unit,
                });
            }
        }
        if method == "get_or_create" {
            if let Some(field) = field_of(&call.receiver) {
                let names = match args.first() {
                    Some(Expr::Reference(r)) => match &*r.expr {
                        Expr::Path(p) => p
                            .path
                            .get_ident()
                            .and_then(|i| self.bound.get(&i.to_string()).cloned()),
                        other => label_names(other),
                    },
                    _ => None,
                };
                if let Some(names) = names {
                    let known = self.labels.entry(field).or_default();
                    for name in names {
                        if !known.contains(&name) {
                            known.push(name);
                        }
                    }
                }
            }
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_family_is_listed_with_its_type_and_labels() {
        let page = super::page().unwrap();
        assert!(
            page.contains("| `plue_queued_steps` | gauge | `labels`, `class` |"),
            "{page}"
        );
        assert!(
            page.contains("| `plue_runs_finished_total` | counter | `status` |"),
            "{page}"
        );
        assert!(
            page.contains("| `plue_step_duration_seconds` | histogram | `status`, `kind` |"),
            "{page}"
        );
        assert!(page.contains("| `plue_leader` | gauge |  |"), "{page}");
    }
}
