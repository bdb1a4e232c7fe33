//! Tests of the bash lexer: contexts, refusals and the values bash would evaluate.

use super::*;

/// The contexts of the references written as `@` in `text`.
fn ctx(text: &str) -> Vec<Context> {
    let (literal, at) = crate::template::at_placeholders(text);
    contexts(&literal, &at)
}

use Context::*;

#[test]
fn quotes_and_comments() {
    assert_eq!(
        ctx("echo @ '@' \"@\" $'@' # @"),
        [Unquoted, Single, Double, AnsiC, Comment]
    );
    assert_eq!(ctx("echo \"it's @\" '\"@'"), [Double, Single]);
    assert_eq!(ctx("echo a#@ ${#x} @"), [Unquoted, Unquoted]);
    assert_eq!(ctx("# c '\necho @"), [Unquoted]);
    assert_eq!(ctx("echo \\'@ \\@"), [Unquoted, AfterBackslash]);
}

#[test]
fn substitutions_nest() {
    assert_eq!(
        ctx("echo \"$(echo '@' \"@\" $(echo @))@\" `echo @` ${x:-@}"),
        [Single, Double, Unquoted, Double, Unquoted, Unquoted]
    );
    assert_eq!(
        ctx("echo $((@ + 1)) $[@] ((@)) @"),
        [Arithmetic, Arithmetic, Arithmetic, Unquoted]
    );
}

#[test]
fn outputs_are_refused_where_bash_expands_nothing() {
    let refused = |text: &str| -> Vec<bool> {
        ctx(text)
            .into_iter()
            .map(|c| c.output_refusal().is_some())
            .collect()
    };
    assert_eq!(
        refused("echo @ \"@\" '@' $'@' # @\ncat <<E\n@\nE"),
        [false, false, true, true, false, false]
    );
    // A status may stand in single quotes; nothing may stand in arithmetic.
    assert_eq!(Single.refusal(), None);
    assert!(Arithmetic.refusal().is_some() && Arithmetic.output_refusal().is_some());
    assert!(expand(Single, "V").is_err());
    assert_eq!(expand(Unquoted, "V").unwrap(), "\"${V}\"");
}

#[test]
fn values_bash_could_run_or_assign_in_arithmetic_are_hazards() {
    for value in [
        "a[$(id)]",
        "a[`id`]",
        "x[${y@P}]",
        "$x [",
        "[`",
        "PATH=0",
        "1 ? HOME = 0 : 0",
        "0||(BASH_ENV=1)",
        "X+=1",
        "A[1] <<= 2",
        "LD_PRELOAD=0",
    ] {
        assert!(evaluation_hazard(value).is_some(), "{value}");
    }
    for value in [
        "a[1]",
        "[1, 2]",
        "$(id)",
        "`id`",
        "$HOME",
        "",
        "a[<(id)]",
        "version=1.2",
        "Path=0",
        "A == 1",
        "X != Y",
        "X <= 2 && Y >= 3",
        "https://x.example/?q=1",
        "OK",
        "2X=1",
    ] {
        assert_eq!(evaluation_hazard(value), None, "{value}");
    }
}

#[test]
fn here_documents() {
    assert_eq!(
        ctx("cat <<EOF; echo @\nbody @\nEOF\necho @"),
        [Unquoted, Heredoc, Unquoted]
    );
    assert_eq!(
        ctx("cat <<'EOF' <<-\"B\" # x\nq @\nEOF\n\tb @\n\tB\n@"),
        [QuotedHeredoc, QuotedHeredoc, Unquoted]
    );
}

#[test]
fn expansions_inside_here_document_bodies_are_code() {
    // Inside `$(...)` of a body a reference is a word again (quoted, so the value is
    // not split or globbed).
    // Arithmetic there is left to the dispatch-time value check.
    assert_eq!(
        ctx("cat <<EOF\n$(printf %s @) \"@\" `echo @`\n$(( @ + 1 )) $[@]\nEOF\n@"),
        [Unquoted, Heredoc, Unquoted, Heredoc, Heredoc, Unquoted]
    );
    // The delimiter line ends the body whatever the body left open, as in bash.
    assert_eq!(ctx("cat <<EOF\n$( @\nEOF\necho \"@\""), [Unquoted, Double]);
    // Bodies follow one another; an empty body; tabs stripped by <<-.
    assert_eq!(
        ctx("cat <<A <<'B' <<-C <<D\na @\nA\nb @\nB\n\tc $(@)\n\tC\nD\n@"),
        [Heredoc, QuotedHeredoc, Unquoted, Unquoted]
    );
    // An unterminated body runs to the end.
    assert_eq!(ctx("cat <<EOF\n@ $(@"), [Heredoc, Unquoted]);
}
