//! The `.plue.py` API reference: the `plue` module's host types, read from their Rust
//! definitions (as starlark-rust documents its modules): every `#[pyclass]` of
//! `evaluator/src/worker/` with its doc comment, and every constructor, static method and
//! attribute of its `#[pymethods]` with theirs. The keyword options a constructor accepts
//! are read from the code too: each `options.take("name")` it (or a helper it hands its
//! options to, in `worker/` or a step kind's module in `worker/kinds/`) makes, so an option
//! added in the code appears here without anyone writing it down.
//!
//! The sources are parsed with `syn`, from the source tree this binary was built from
//! (`plue __docs` is a development command, run in the repository).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use syn::visit::Visit;
use syn::{Attribute, Expr, ExprCall, ExprMethodCall, ImplItem, Item, ItemFn, Lit};

use super::markdown::{code, prose};

/// Where the host types live, relative to the engine crate.
const HOST_DIR: &str = "../evaluator/src/worker";
/// Listed first; the other files follow by name.
const MAIN_FILE: &str = "host.rs";
/// The step kinds' modules (`Step.llm`'s own options), read after the files of `HOST_DIR`.
const KINDS_DIR: &str = "kinds";

pub(super) fn page() -> anyhow::Result<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(HOST_DIR);
    let mut files = source_files(&dir)?;
    files.extend(source_files(&dir.join(KINDS_DIR))?);
    let mut parsed = Vec::new();
    let mut stems = Vec::new();
    for path in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        parsed.push(file);
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        stems.push(stem.unwrap_or_default());
    }
    // Each function by `module::name` (`llm::action`, as a call names it) and, the first
    // file's winning, by its bare name.
    let mut functions: BTreeMap<String, &ItemFn> = BTreeMap::new();
    for (file, stem) in parsed.iter().zip(&stems) {
        for item in &file.items {
            if let Item::Fn(f) = item {
                let name = f.sig.ident.to_string();
                functions.insert(format!("{stem}::{name}"), f);
                functions.entry(name).or_insert(f);
            }
        }
    }
    let mut out = String::from("# The `.plue.py` API\n\n");
    out.push_str(
        "A workflow file defines `workflow(ctx)` and returns a `Plan`. These are the types \
         the `plue` module gives it (`from plue import *` is implied), each as its Rust \
         definition documents it. The guide shows them at work; the \
         [plan rules](../plue-py.md) say what a plan may hold.\n\n",
    );
    for file in &parsed {
        for item in &file.items {
            let Item::Struct(structure) = item else {
                continue;
            };
            let Some(class) = pyclass(&structure.attrs) else {
                continue;
            };
            let _ = writeln!(out, "## `{}`\n", class.name);
            let doc = doc_text(&structure.attrs);
            if !doc.is_empty() {
                let _ = writeln!(out, "{}\n", prose(&doc));
            }
            let ident = structure.ident.to_string();
            let mut members = String::new();
            if class.get_all {
                for field in &structure.fields {
                    let Some(name) = &field.ident else { continue };
                    member(
                        &mut members,
                        &format!("{}.{name}", class.name),
                        &doc_text(&field.attrs),
                        &[],
                    );
                }
            }
            for file in &parsed {
                for item in &file.items {
                    methods(item, &ident, &class.name, &functions, &mut members);
                }
            }
            out.push_str(&members);
        }
    }
    Ok(out)
}

/// `host.rs` first, then every other `.rs` file of `dir` by name.
fn source_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort_by_key(|p| (p.file_name() != Some(MAIN_FILE.as_ref()), p.clone()));
    Ok(files)
}

struct Class {
    name: String,
    get_all: bool,
}

/// `#[pyclass(name = "Plan", get_all, ...)]`.
fn pyclass(attrs: &[Attribute]) -> Option<Class> {
    let attr = attrs.iter().find(|a| a.path().is_ident("pyclass"))?;
    let mut class = Class {
        name: String::new(),
        get_all: false,
    };
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("name") {
            class.name = meta.value()?.parse::<syn::LitStr>()?.value();
        } else if meta.path.is_ident("get_all") {
            class.get_all = true;
        } else if meta.input.peek(syn::Token![=]) {
            meta.value()?.parse::<Expr>()?;
        }
        Ok(())
    });
    (!class.name.is_empty()).then_some(class)
}

/// The members of `#[pymethods] impl <ident>` in `item`.
fn methods(
    item: &Item,
    ident: &str,
    class: &str,
    functions: &BTreeMap<String, &ItemFn>,
    out: &mut String,
) {
    let Item::Impl(block) = item else { return };
    if !block.attrs.iter().any(|a| a.path().is_ident("pymethods")) {
        return;
    }
    let syn::Type::Path(self_ty) = &*block.self_ty else {
        return;
    };
    if self_ty.path.segments.last().map(|s| s.ident.to_string()) != Some(ident.to_string()) {
        return;
    }
    for item in &block.items {
        let ImplItem::Fn(method) = item else { continue };
        let name = method.sig.ident.to_string();
        if name.starts_with("__") {
            continue;
        }
        let attrs = &method.attrs;
        let has = |what: &str| attrs.iter().any(|a| a.path().is_ident(what));
        let title = if has("new") {
            format!("{class}(...)")
        } else if let Some(getter) = attrs.iter().find(|a| a.path().is_ident("getter")) {
            let renamed = match &getter.meta {
                syn::Meta::List(list) => {
                    list.tokens.to_string().trim_start_matches("r#").to_string()
                }
                _ => String::new(),
            };
            format!(
                "{class}.{}",
                if renamed.is_empty() { name } else { renamed }
            )
        } else {
            // A static method, or one called on an instance: `Step.bash(...)`.
            format!("{class}.{name}(...)")
        };
        let mut finder = OptionFinder {
            functions,
            seen: BTreeSet::new(),
            options: Vec::new(),
        };
        finder.visit_block(&method.block);
        member(out, &title, &doc_text(attrs), &finder.options);
    }
}

fn member(out: &mut String, title: &str, doc: &str, options: &[String]) {
    let _ = writeln!(out, "### `{title}`\n");
    if !doc.is_empty() {
        let _ = writeln!(out, "{}\n", prose(doc));
    }
    if !options.is_empty() {
        let options: Vec<String> = options.iter().map(|o| code(o)).collect();
        let _ = writeln!(out, "Keyword options: {}.\n", options.join(", "));
    }
}

/// A doc comment's text: its lines joined, paragraphs kept.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_string())
        .collect();
    let mut text = String::new();
    for line in lines {
        if line.trim().is_empty() {
            text.push_str("\n\n");
        } else {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push(' ');
            }
            text.push_str(line.trim_end());
        }
    }
    text.trim().to_string()
}

/// Collects the names of `options.take("name")` calls, following the functions the
/// options are handed to (`build_step(.., options, ..)`, `hand_off(&mut options, ..)`)
/// and the literal names passed with them (`names_option(&mut options, "actions", ..)`).
struct OptionFinder<'a> {
    functions: &'a BTreeMap<String, &'a ItemFn>,
    seen: BTreeSet<String>,
    options: Vec<String>,
}

impl OptionFinder<'_> {
    fn add(&mut self, name: String) {
        if !self.options.contains(&name) {
            self.options.push(name);
        }
    }
}

fn is_options(expr: &Expr) -> bool {
    match expr {
        Expr::Path(p) => p.path.is_ident("options"),
        Expr::Reference(r) => is_options(&r.expr),
        _ => false,
    }
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

impl<'ast> Visit<'ast> for OptionFinder<'_> {
    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        if call.method == "take" && is_options(&call.receiver) {
            if let Some(name) = call.args.first().and_then(string_literal) {
                self.add(name);
            }
        }
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if let Expr::Path(function) = &*call.func {
            let segments: Vec<String> = function
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            let constructor = segments.first().is_some_and(|s| s == "Options");
            if !constructor && call.args.iter().any(is_options) {
                for name in call.args.iter().filter_map(string_literal) {
                    self.add(name);
                }
                // `kinds::llm::action(..)` by `llm::action`, `build_step(..)` by its name.
                let qualified = match segments.as_slice() {
                    [.., module, name] => Some(format!("{module}::{name}")),
                    _ => None,
                };
                let found = qualified
                    .filter(|key| self.functions.contains_key(key))
                    .or_else(|| segments.last().cloned());
                if let Some(key) = found {
                    if let Some(f) = self.functions.get(&key) {
                        if self.seen.insert(key) {
                            self.visit_block(&f.block);
                        }
                    }
                }
            }
        }
        syn::visit::visit_expr_call(self, call);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_types_and_their_options_are_listed() {
        let page = super::page().unwrap();
        assert!(page.contains("## `Plan`"), "{page}");
        assert!(page.contains("### `Step.bash(...)`"), "{page}");
        // Options one step kind's module reads (`worker/kinds/llm.rs`), and the helpers
        // it hands them to.
        assert!(page.contains("`max_cost_usd`"), "{page}");
        assert!(page.contains("`fail_when`"), "{page}");
        assert!(page.contains("`approve_outputs`"), "{page}");
        assert!(page.contains("`fresh_interpreter`"), "{page}");
        assert!(page.contains("`depends_on`"), "{page}");
        assert!(page.contains("`paths_ignore`"), "{page}");
        assert!(page.contains("### `Context.ref`"), "{page}");
    }
}
