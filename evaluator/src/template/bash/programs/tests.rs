//! Tests of the program positions: which words of which commands are code or a format.

use super::*;

#[test]
fn an_output_is_never_a_format_or_another_program_s_code() {
    let refused = |text: &str| -> Vec<bool> {
        let (literal, at) = crate::template::at_placeholders(text);
        format_refusals(&literal, &at)
            .into_iter()
            .map(|r| r.is_some())
            .collect()
    };
    for text in [
        "printf @",
        "printf \"hello @\\n\"",
        "printf -v out @",
        "printf -vout -- @x",
        "x=1; printf \"$(echo @)\" a",
        "if true; then printf @; fi",
        "LC_ALL=C printf @",
        "echo $(printf @)",
        "a | printf \\\n  @",
        "command printf @ x",
        // Programs of other commands, in any quoting.
        "bash -c \"echo @\"",
        "sudo sh -ec \"echo @; true\" x",
        "/bin/bash -o pipefail -c @",
        "python3 -c \"print(@)\"",
        "perl -ne \"print @\" f",
        "node --eval @",
        "eval echo @",
        "eval \"x=@\"; echo",
        "trap \"rm @\" EXIT",
        "su -c @ user",
        // regression (issue 30): forms that passed check and ran the output.
        "printf '-v' out @",
        "printf \"--\" \"@\"",
        "\\printf \"@\" x",
        "'printf' \"@\" x",
        "\"bash\" -c \"echo @\"",
        "\\eval \"echo @\"",
        "p=printf; $p \"@\" x",
        "sh=bash; ${sh} -c \"echo @\"",
        "$SHELL -c \"echo @\"",
        "timeout 5 printf \"@\" x",
        "timeout 5 bash -c \"echo @\"",
        "nice -n 5 sh -c \"echo @\"",
        "command -p printf \"@\" x",
        "time -p printf \"@\" x",
        "echo x | xargs -I{} printf \"@\" {}",
        "echo x | xargs -0 -I{} sh -c \"echo @\"",
        "env -i PATH=/bin bash -c \"echo @\"",
        "sudo -u nobody bash -c \"echo @\"",
        "if true; then timeout 1 sh -c \"@\"; fi",
        "find . -exec sh -c \"echo @\" \\;",
        "python3 - <<EOF\nprint(\"@\")\nEOF",
        "bash <<EOF\necho \"@\"\nEOF",
        "bash 2>/dev/null <<-EOF\n\techo @\n\tEOF",
        "bash <<< \"echo @\"",
        "sh <<<@",
        "source <(echo \"echo @\")",
        ". <(echo \"echo @\")",
        "bash <(echo @)",
        "source /dev/stdin <<< \"@\"",
        "awk \"BEGIN { print \\\"@\\\" }\"",
        "awk -v t=x -F: \"{ print @ }\" file",
        "gawk -e \"@\"",
        "sed \"s/x/@/\"",
        "sed -n -e p -e \"@\" f",
        "sed -E \"s/x/@/e\" f",
        "sed --expression=@ f",
        "perl -e 1 -e \"@\"",
        "watch -n 1 \"echo @\"",
    ] {
        assert_eq!(refused(text), [true], "{text}");
    }
    for text in [
        "printf '%s\\n' @",
        "printf %s \"@\" @",
        "printf -v x %s @",
        "echo printf @",
        "myprintf @",
        "printf_x @",
        "echo 'printf' @",
        "# printf @",
        "echo \"printf @\"",
        "printf",
        "bash -c 'echo \"$1\"' _ @",
        "bash script.sh @",
        "python3 -m http.server @",
        "python3 tool.py -c @",
        "eval x; echo @",
        "trap 'rm \"$F\"' EXIT; F=@",
        "ssh host ls @ || echo bash -c @",
        "echo sh -c @",
        // Data, not code: arguments, other commands' here-documents, program files.
        "bash <<EOF\necho hi\nEOF\necho @",
        "cat <<EOF\n@\nEOF",
        "bash script.sh <<< @",
        "awk '{ print $1 }' @",
        "awk -f prog.awk @",
        "sed -e 's/a/b/' @",
        "sed -f script.sed @",
        "timeout 5 curl @",
        "$CURL -o out @",
        "p=curl; $p @",
        "echo $p @",
        "cd .; ls @",
        "echo source @",
        "printf -v x -- '%s' @",
    ] {
        assert!(refused(text).iter().all(|r| !r), "{text}");
    }
    // Each `printf` scans its words: many unclosed-looking ones stay linear.
    for bomb in [
        "printf $'\\'' @;",
        "bash -o x -c @ ",
        "eval @ ",
        "/bin/sh -c @ /bin/bash ",
        "x=1 sudo env bash -ec \"@\";",
        "trap -- @ EXIT\n",
        "timeout 1 x bash -c @ ",
        "bash <<X\n@\n",
        ". <(@ ",
        "$p -c @ ",
        "p=printf; $p @;",
        "sed -e @ ",
        "a=1 b=2 nice x y z printf @ ",
    ] {
        // Each bomb alone: ~0.2 s in a debug build; a quadratic one takes minutes.
        let started = std::time::Instant::now();
        let text = bomb.repeat((1 << 20) / bomb.len());
        let _ = refused(&text);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2000),
            "{bomb:?}: {:?}",
            started.elapsed()
        );
    }
}
