//! The book's internal links, checked over its Markdown sources: every relative link of
//! `docs/src/**/*.md` and of the README leads to a file, its `#anchor` to a heading (or an
//! `id=`) of that page as mdBook names it, a link of the book stays inside the book, and
//! every page of the book is in `SUMMARY.md` (mdBook renders no other).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::markdown::heading_id;

/// Every broken link of the book in `src` and of the pages in `extra` (outside the book:
/// the README), one message each: `file: link: why`.
pub(super) fn broken_links(src: &Path, extra: &[PathBuf]) -> Vec<String> {
    let mut pages: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    let mut anchors: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
    let listed: Vec<PathBuf> = links(&summary)
        .into_iter()
        .map(|l| normal(&src.join(l.split('#').next().unwrap_or(""))))
        .collect();
    for page in &pages {
        if page.file_name() != Some("SUMMARY.md".as_ref()) && !listed.contains(&normal(page)) {
            problems.push(format!(
                "{}: not in SUMMARY.md (mdBook would not render it)",
                page.display()
            ));
        }
    }
    let src = normal(src);
    for (page, in_book) in pages
        .iter()
        .map(|p| (p, true))
        .chain(extra.iter().map(|p| (p, false)))
    {
        let Ok(text) = std::fs::read_to_string(page) else {
            problems.push(format!("{}: cannot be read", page.display()));
            continue;
        };
        let dir = page.parent().unwrap_or(Path::new("."));
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                normal(page)
            } else {
                normal(&dir.join(path))
            };
            let why = if in_book && !target.starts_with(&src) {
                Some("leaves the book (mdBook serves only docs/src)".to_string())
            } else if !target.exists() {
                Some("no such file".to_string())
            } else if let Some(anchor) =
                anchor.filter(|_| target.extension().is_some_and(|e| e == "md"))
            {
                let ids = anchors
                    .entry(target.clone())
                    .or_insert_with(|| ids(&std::fs::read_to_string(&target).unwrap_or_default()));
                (!ids.iter().any(|id| id == anchor))
                    .then(|| format!("no heading #{anchor} in {}", target.display()))
            } else {
                None
            };
            if let Some(why) = why {
                problems.push(format!("{}: {link}: {why}", page.display()));
            }
        }
    }
    problems
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            return false;
        }
        // An indented line is code unless it is a nested list item (SUMMARY.md's).
        let list_item = trimmed.starts_with("- ")
            || trimmed.starts_with("* ")
            || trimmed
                .split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        !fenced && (list_item || !line.starts_with("    "))
    })
}

/// `line` without its code spans.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` and reference definitions
/// `[label]: target` of `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose_lines(text) {
        let line = without_code(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some((_, target)) = trimmed.split_once("]: ") {
                found.push(target.split_whitespace().next().unwrap_or("").to_string());
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                found.push(target.to_string());
            }
            rest = &rest[end..];
        }
    }
    found
}

/// The ids mdBook gives the headings of `text` (repeats numbered `-1`, `-2`, ...), and the
/// `id="..."` attributes of its HTML.
fn ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for line in prose_lines(text) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            let title = trimmed.trim_start_matches('#').trim();
            let id = heading_id(&rendered(title));
            let mut unique = id.clone();
            let mut n = 1;
            while ids.contains(&unique) {
                unique = format!("{id}-{n}");
                n += 1;
            }
            ids.push(unique);
        }
        let mut rest = line;
        while let Some(at) = rest.find("id=\"") {
            rest = &rest[at + 4..];
            let end = rest.find('"').unwrap_or(rest.len());
            ids.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    ids
}

/// A heading's text as rendered: links as their text, emphasis and code marks dropped.
fn rendered(title: &str) -> String {
    let mut out = String::new();
    let mut rest = title;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace(['`', '*'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_link_of_the_book_and_the_readme_resolves() {
        let root = normal(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let problems = broken_links(
            &root.join("docs/src"),
            &[root.join("README.md"), root.join("bench/README.md")],
        );
        assert!(
            problems.is_empty(),
            "broken links:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn a_broken_link_anchor_or_unlisted_page_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("guide")).unwrap();
        std::fs::write(
            src.join("SUMMARY.md"),
            "# Summary\n\n- [Intro](intro.md)\n- [Guide](guide/run.md)\n",
        )
        .unwrap();
        std::fs::write(
            src.join("intro.md"),
            "# Intro\n\n## The `--idle-timeout` flag\n\nSee [run](guide/run.md#running-locally), \
             [flag](#the---idle-timeout-flag), [web](https://example.com/x.md) and `[no](code.md)`.\n\n\
             ```\n[fenced](nowhere.md)\n```\n",
        )
        .unwrap();
        std::fs::write(src.join("guide/run.md"), "# Running locally\n").unwrap();
        assert_eq!(broken_links(&src, &[]), Vec::<String>::new());

        std::fs::write(
            src.join("guide/run.md"),
            "# Running locally\n\n[gone](../missing.md), [anchor](../intro.md#nothing), \
             [out](../../README.md)\n",
        )
        .unwrap();
        std::fs::write(src.join("unlisted.md"), "# Unlisted\n").unwrap();
        let problems = broken_links(&src, &[]);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].contains("unlisted.md: not in SUMMARY.md"),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("../missing.md: no such file"),
            "{problems:#?}"
        );
        assert!(problems[2].contains("no heading #nothing"), "{problems:#?}");
        assert!(problems[3].contains("leaves the book"), "{problems:#?}");
    }

    #[test]
    fn repeated_headings_get_numbered_ids() {
        assert_eq!(
            ids("# A\n## Logs\n### Logs\n<a id=\"x\"></a>\n"),
            vec!["a", "logs", "logs-1", "x"]
        );
    }
}
