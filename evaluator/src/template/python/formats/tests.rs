//! Tests of the format, template and pattern positions of Python outputs.

use super::*;

/// Whether each `@` of `script` (an output reference) is refused, and the reasons.
fn refused(script: &str) -> Vec<Option<&'static str>> {
    let (literal, at) = crate::template::at_placeholders(script);
    refusals(&literal, &at)
}

#[test]
fn an_output_is_never_formatted_as_a_format_string() {
    // regression (issue 30): `{{ ref }}.format(obj)` passed `plue check`; the output
    // `{0.__init__.__globals__[os].environ[TOKEN]:.1}` printed prefixes of a secret.
    for script in [
        "print(@.format(obj))",
        "print(@ .format_map(vars))",
        "f = @.format\nf(obj)",
        "print((@).format(obj))",
        "print((\"a\" + @ + \"b\").format(obj))",
        "print(str(@).format(obj))",
        "print(@.strip()[1:].format(obj))",
        "print(\"{}\".format(@).format(obj))",
        "print(f\"{@}\".format(obj))",
        "print(f'{ @.format(obj) }')",
        "print(@ % obj)",
        "print((@ + \"\") % os.environ)",
        "print(str.format(@, obj))",
        "print(str.format_map(@, vars(obj)))",
        "print(string.Formatter().vformat(@, (obj,), {}))",
        "print(string.Formatter().format(@, obj))",
        "print(my_formatter.format(\"x\" + @, obj))",
        "print(format(obj, @))",
        "print(string.Template(@).substitute(os.environ))",
        "print(Template(template=@).substitute(os.environ))",
        "re.compile(@)",
        "re.search(\"^\" + @, text)",
        "fnmatch.fnmatch(name, @)",
        "glob.glob(@)",
        "Path('.').rglob(@)",
        "x = [\n  @\n  .format(obj)\n]",
    ] {
        let got = refused(script);
        assert!(got.iter().all(Option::is_some), "{script}: {got:?}");
    }
}

#[test]
fn an_output_passed_as_a_value_is_fine() {
    for script in [
        "print(@)",
        "print(\"{}\".format(@))",
        "print(\"{} {x}\".format(1, x=@))",
        "print(template.format(@))",
        "print(\"%s\" % @)",
        "print(\"%s\" % (@,))",
        "print(\"a\" + @.strip())",
        "print(int(@) % 2)",
        "print(len(@) % 2, float(@).__format__(''))",
        "print(f\"{@} {x:>{@}}\")",
        "print(f'{@!r}'.upper())",
        "print(format(@, '>10'))",
        "re.compile(re.escape(@))",
        "re.search(pattern, @)",
        "re.sub(r'\\d', '', @)",
        "print(@ + '%')",
        "x = @\nprint('{}'.format(x))",
        "print(@)\n(obj).format(1)",
        "print(@, end='')  # @.format(obj)",
        "s = '@.format(obj)'",
        "d[@] = 1; d.format(obj)",
        "print(@ + \"x\".format(obj))",
        "print(\"\"\"{\n}\"\"\".format(@))",
    ] {
        let got = refused(script);
        assert!(got.iter().all(Option::is_none), "{script}: {got:?}");
    }
}

#[test]
fn formats_reached_through_names_and_calls_are_refused() {
    // regression (issue 30): each of these passed check and printed a secret's prefix.
    for script in [
        "print(getattr(@, \"format\")(C()))",
        "fmt = string.Formatter(); print(fmt.format(@, C()))",
        "from string import Formatter as F\nprint(F().format(@, C()))",
        "print(list(map(str.format, [@], [C()])))",
        "print(type(\"\").format(@, C()))",
        "print(\"\".__class__.format(@, C()))",
        "S = str; print(S.format(@, C()))",
        "print(functools.partial(str.format, @)(C()))",
        "print(operator.methodcaller(\"format\", C())(@))",
        "print(str.format.__call__(@, C()))",
        "print((s := @) and s.format(C()))",
        "t = @\nprint(t.format(C()))",
        "t = \"x\" + @\nprint(t % os.environ)",
        "f = str.format\nprint(f(@, C()))",
        "T = type(\"\"); F2 = T\nprint(F2.format_map(@, d))",
        "print(getattr(str, \"format_map\")(@, d))",
        "print([t.format(C()) for t in [@]][0])",
        "for t in [@]:\n    print(t.format(C()))",
        "print((lambda t: t.format(C()))(@))",
        "print(str(string.Formatter().get_field(@, [C()], {})[0]))",
        "print(@.__mod__(()))",
        "print(str.__mod__(@, d))",
    ] {
        let got = refused(script);
        assert!(got.iter().all(Option::is_some), "{script}: {got:?}");
    }
    for script in [
        "print(\"{}\".format(@))",
        "print(tmpl.format(@))",
        "print(\"%s\" % @)",
        "f = \"{}\".format\nprint(f(@))",
        "print(list(map(str.strip, [@])))",
        "n = int(@)\nprint(n % 2)",
        "s = str(@)\nprint(s.upper())",
        "x = @\ny = \"{}\"\nprint(y.format(x))",
        "print(getattr(obj, \"name\"), @)",
        "fmt = string.Formatter(); print(fmt.format(\"{}\", @))",
        "print([t.upper() for t in [@]])",
        "print((lambda t: t.strip())(@))",
        "print(\"%s\".__mod__(@))",
    ] {
        let got = refused(script);
        assert!(got.iter().all(Option::is_none), "{script}: {got:?}");
    }
}

#[test]
fn aliases_and_indirect_calls_stay_linear() {
    let started = std::time::Instant::now();
    let chained = "a = ".repeat(100_000) + "str\nprint(a.format(@))";
    assert_eq!(refused(&chained), [Some(FORMAT_ARGUMENT)]);
    let nested = "getattr(".repeat(20_000) + "@, 'format'" + &")".repeat(20_000);
    assert!(refused(&nested).iter().all(Option::is_some));
    let stored = "s = @\n".repeat(20_000) + "s.format(o)";
    assert!(refused(&stored).iter().all(Option::is_some));
    let walrus = "(s := ".repeat(20_000) + "@" + &")".repeat(20_000) + ".format(o)";
    assert!(refused(&walrus).iter().all(Option::is_some));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn each_reason_names_what_to_do() {
    assert_eq!(refused("@.format(1)"), [Some(RECEIVER)]);
    assert_eq!(refused("@ % 1"), [Some(PERCENT)]);
    assert_eq!(refused("str.format(@)"), [Some(FORMAT_ARGUMENT)]);
    assert_eq!(refused("Template(@)"), [Some(TEMPLATE)]);
    assert_eq!(refused("re.match(@, s)"), [Some(PATTERN)]);
    // Only the reference in the format position.
    assert_eq!(refused("print(@.format(@))"), [Some(RECEIVER), None]);
}

#[test]
fn tokenizing_is_linear_and_total() {
    // Unbalanced and unterminated text never panics.
    for script in [
        ")))",
        "(((",
        "f'{",
        "f'{x:",
        "f'{x:{",
        "'''",
        "f'}'",
        "\\",
        "x.",
        "%",
        "@.",
        "f\"{'}\"",
        "rb'\\",
        "é@.format(1)",
    ] {
        let _ = refused(script);
    }
    let started = std::time::Instant::now();
    let nested = "(@ + ".repeat(20_000) + &")".repeat(20_000) + ".format(o)";
    assert!(refused(&nested).iter().all(Option::is_some));
    // Long chains: every `.format` walks back over the same primary.
    let chain = "x = @".to_string() + &".format(o)".repeat(50_000);
    assert!(refused(&chain).iter().all(Option::is_some));
    // Many safe references inside many format positions: past the budget, refused.
    let safe = |n: usize| "(".to_string() + &"int(@) + ".repeat(n) + "0)" + &".format(o)".repeat(n);
    assert!(refused(&safe(500)).iter().all(Option::is_none));
    assert!(refused(&safe(20_000))
        .iter()
        .all(|g| g == &Some(TOO_COSTLY)));
    let costly = "str.format(".repeat(20_000) + &"int(@) + ".repeat(20_000) + &")".repeat(20_000);
    let got = refused(&costly);
    assert!(got
        .iter()
        .all(|g| g == &Some(FORMAT_ARGUMENT) || g == &Some(TOO_COSTLY)));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}
