//! `{{ raw ... }}` references are written in the workflow file itself.
//!
//! A raw reference pastes an upstream output into code; only the workflow's author may
//! ask for that, and the author's words are the file at the trusted commit. Whoever
//! triggers a run controls `ctx` text (branch and file names, manual inputs), and a
//! workflow may transform that text before pasting it: join two inputs (`'v{'` +
//! `'{ raw ...}}'`), strip characters (`f.replace("src/", "")` on a file named
//! `{src/{ raw ...}}`), drop backslashes. No escape of ctx text survives every
//! transformation, so the rule is about the file instead: every raw reference of a plan
//! must appear in the file's source text, as a reference that parses to the same step,
//! field and `raw` form (whitespace inside the braces is free). A plan holding any other
//! raw reference was built from data, and is refused naming the step and the reference.
//!
//! What it does not cover, by design: plain references (`{{ steps.a.outputs.x }}`) built
//! at evaluation time are allowed — they render as reads of a variable, data wherever they
//! stand — and a raw reference the file does write may be reproduced by ctx text in another
//! place of the plan (it names an output the author already chose to trust as code).
//! A consequence for generated pipelines: a raw reference built by an f-string or `%` in a
//! loop is refused; write each `{{ raw ... }}` literally.
//!
//! Cost: one scan of the source ([`super::reference_texts`], linear) and one parse of
//! each plan template that holds `{{`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use super::{echo, parse_reference, reference_texts, sites, Reference, Template};
use crate::diagnostic::{Diagnostic, Found};
use crate::plan::{Plan, SourceMap};

/// Every raw reference written in `source` (a workflow file's text), normalized.
pub fn written_raw(source: &str) -> HashSet<Reference> {
    reference_texts(source)
        .into_iter()
        .filter_map(|text| parse_reference(&text[2..text.len() - 2]).ok())
        .filter(|reference| reference.raw)
        .collect()
}

/// Every template of `plan` holding a raw reference that `source`, the file the plan was
/// evaluated from, does not write: one problem per template, at its step.
pub fn unwritten_raw(plan: &Plan, map: &SourceMap, path: &str, source: &str) -> Vec<Diagnostic> {
    let mut written = None;
    let mut found = Found::new(path);
    let _ = sites(plan, &mut |site| {
        // A template that does not parse was reported by validation.
        let Ok(template) = Template::parse(site.text) else {
            return ControlFlow::Continue(());
        };
        let written = written.get_or_insert_with(|| written_raw(source));
        let Some(unwritten) = template
            .references()
            .find(|r| r.raw && !written.contains(*r))
        else {
            return ControlFlow::Continue(());
        };
        let (at, owner) = match site.step {
            Some(i) => (map.step(i), format!("step '{}'", echo(&plan.steps[i].id))),
            None => (map.plan, "the plan".to_string()),
        };
        found.add(
            at,
            format!(
                "{owner}: {}: '{}' is not written in the workflow file: a raw reference pastes an output into code, so it must appear literally in the file's own text, never be assembled at evaluation time (from ctx text — a branch, file name or input — or by an f-string); write '{}' in the file",
                site.what,
                echo(&unwritten.to_string()),
                echo(&unwritten.to_string()),
            ),
        );
        ControlFlow::Continue(())
    });
    found.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Step;

    fn plan(command: &str) -> Plan {
        Plan::new(
            "p",
            vec![
                Step::bash("a", "true"),
                Step::bash("lint", command).after(&["a"]),
            ],
        )
    }

    fn problems(command: &str, source: &str) -> Vec<String> {
        let map = SourceMap {
            steps: vec![Default::default(); 2],
            ..SourceMap::default()
        };
        unwritten_raw(&plan(command), &map, "w.plue.py", source)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_raw_reference_assembled_from_ctx_text_is_refused() {
        // regression (issue 30): the ctx escape did not survive transformations — two
        // inputs joined ('v{' + '{ raw ...}}'), a file named '{src/{ raw ...}}' with
        // "src/" removed — and the reference ran an upstream output in a step with secrets.
        let source = r#"def workflow(ctx):
    names = [f.replace("src/", "") for f in ctx.changed_files]
    return Plan("p", steps=[Step.bash("a", "true"),
        Step.bash("lint", "".join('echo "linting ' + n + '"' for n in names), depends_on=["a"])])
"#;
        let found = problems(r#"echo "linting {{ raw steps.a.outputs.x }}""#, source);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("step 'lint': command: '{{ raw steps.a.outputs.x }}' is not written in the workflow file"),
            "{found:?}"
        );
    }

    #[test]
    fn a_raw_reference_written_in_the_file_passes_whatever_its_spacing() {
        let source = r#"Step.bash("lint", "echo {{raw   steps.a.outputs.x}}", depends_on=["a"])"#;
        assert_eq!(
            problems("echo {{ raw steps.a.outputs.x }}", source),
            [] as [String; 0]
        );
        // In an f-string the braces are doubled; the reference is still in the text.
        let source = r#"f"echo {{{{ raw steps.a.outputs.x }}}} {n}""#;
        assert_eq!(
            problems("echo {{ raw steps.a.outputs.x }} 1", source),
            [] as [String; 0]
        );
    }

    #[test]
    fn only_the_written_step_field_and_raw_form_count() {
        let source =
            "'{{ raw steps.a.outputs.y }}' '{{ steps.a.outputs.x }}' '{{ raw steps.a.status }}'";
        assert_eq!(
            problems("echo {{ raw steps.a.outputs.x }}", source).len(),
            1
        );
        // Plain references are data wherever they stand: assembled ones pass.
        assert_eq!(
            problems("echo {{ steps.a.outputs.z }}", source),
            [] as [String; 0]
        );
        assert_eq!(
            problems("echo {{ raw steps.a.status }}", source),
            [] as [String; 0]
        );
    }

    #[test]
    fn a_raw_reference_built_by_an_f_string_is_refused() {
        let source = r#"f"echo {{{{ raw steps.{s}.outputs.x }}}}""#;
        assert_eq!(
            problems("echo {{ raw steps.a.outputs.x }}", source).len(),
            1
        );
    }
}
