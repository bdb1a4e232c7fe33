//! The CLI reference: every visible verb of `plue`, its usage, arguments and flags, walked
//! from clap's `Command` (the same definition that parses the command line).

use std::fmt::Write;

use clap::{Arg, ArgAction, Command, CommandFactory};

use super::markdown::{code, plain};
use crate::cli::Cli;

pub(super) fn page() -> String {
    let mut command = Cli::command();
    command.build();
    let mut out = String::from("# The `plue` command line\n\n");
    let _ = writeln!(
        out,
        "{}\n\nEvery verb and flag of `plue`. A flag with an environment variable reads it \
         when the flag is not given. `plue VERB --help` prints the same text.\n",
        plain(&about(&command)),
    );
    let _ = writeln!(out, "## Verbs\n");
    for sub in visible_subcommands(&command) {
        walk_index(sub, &format!("plue {}", sub.get_name()), &mut out);
    }
    out.push('\n');
    let _ = writeln!(out, "## Global flags\n");
    for arg in command
        .get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set())
    {
        arg_item(arg, &mut out);
    }
    out.push('\n');
    for sub in visible_subcommands(&command) {
        walk(sub, &format!("plue {}", sub.get_name()), &mut out);
    }
    out
}

fn visible_subcommands(command: &Command) -> impl Iterator<Item = &Command> {
    command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn walk_index(command: &Command, path: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "- [{}](#{}): {}",
        code(path),
        anchor(path),
        plain(first_line(&about(command)))
    );
    for sub in visible_subcommands(command) {
        walk_index(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn walk(command: &Command, path: &str, out: &mut String) {
    let _ = writeln!(out, "## `{path}`\n");
    let about = about(command);
    if !about.is_empty() {
        let _ = writeln!(out, "{}\n", plain(&about));
    }
    let usage = command
        .clone()
        .bin_name(path)
        .render_usage()
        .to_string()
        .trim_start_matches("Usage: ")
        .to_string();
    let _ = writeln!(out, "```text\n{usage}\n```\n");
    let positionals: Vec<&Arg> = command
        .get_positionals()
        .filter(|a| !a.is_hide_set())
        .collect();
    if !positionals.is_empty() {
        let _ = writeln!(out, "Arguments:\n");
        for arg in positionals {
            arg_item(arg, out);
        }
        out.push('\n');
    }
    let flags: Vec<&Arg> = command
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !flags.is_empty() {
        let _ = writeln!(out, "Flags:\n");
        for arg in flags {
            arg_item(arg, out);
        }
        out.push('\n');
    }
    for sub in visible_subcommands(command) {
        walk(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

/// One argument as a list item: its spelling, what it means, and its default, choices and
/// environment variable.
fn arg_item(arg: &Arg, out: &mut String) {
    let mut facts = Vec::new();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
        facts.push(format!("default {}", code(&defaults.join(","))));
    }
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| code(v.get_name()))
        .collect();
    if !choices.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
    {
        facts.push(format!("one of {}", choices.join(", ")));
    }
    if let Some(env) = arg.get_env() {
        facts.push(format!("env {}", code(&env.to_string_lossy())));
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        facts.push("repeatable".to_string());
    }
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join("; "))
    };
    let _ = writeln!(out, "- {}{facts}: {}", code(&spelling(arg)), plain(&help));
}

/// `--runners <RUNNERS>`, `-f, --follow`, `<FILE>`.
fn spelling(arg: &Arg) -> String {
    let value = match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => String::new(),
        _ => arg
            .get_value_names()
            .map(|names| {
                names
                    .iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| format!("<{}>", arg.get_id().as_str().to_uppercase())),
    };
    if arg.is_positional() {
        return value;
    }
    let mut names = Vec::new();
    if let Some(short) = arg.get_short() {
        names.push(format!("-{short}"));
    }
    if let Some(long) = arg.get_long() {
        names.push(format!("--{long}"));
    }
    let names = names.join(", ");
    if value.is_empty() {
        names
    } else {
        format!("{names} {value}")
    }
}

fn about(command: &Command) -> String {
    command
        .get_long_about()
        .or_else(|| command.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The anchor mdBook gives the heading `` `path` ``: lower case, spaces as `-`, other
/// punctuation but `-` and `_` dropped.
fn anchor(path: &str) -> String {
    super::markdown::heading_id(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_verb_and_its_flags_are_listed() {
        let page = page();
        assert!(page.contains("## `plue serve`"), "{page}");
        assert!(page.contains("`--idle-timeout <IDLE_TIMEOUT>`"), "{page}");
        assert!(page.contains("## `plue runner-token create`"), "{page}");
        assert!(!page.contains("__eval-worker") && !page.contains("__docs"));
    }
}
