#!/usr/bin/env python3
"""Checks every internal link of the built book (docs/book): each href of a page's main
content that is not an outside URL must lead to a file of the book, and its #fragment to an
id on that page. Exits 1, listing each broken link, when one does not.

Run after `mdbook build docs` (.ci/run does). The same rules are checked over the Markdown
sources by the plue binary's docs::links tests; this one reads what mdBook really wrote.
"""
import html
import os
import re
import sys
from urllib.parse import unquote

BOOK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "book")
# Pages mdBook writes itself: the print page repeats every chapter, the others hold no
# chapter text.
SKIP = {"print.html", "404.html", "toc.html"}


def main():
    ids, pages = {}, []
    for root, _, files in os.walk(BOOK):
        for name in files:
            if name.endswith(".html"):
                path = os.path.normpath(os.path.join(root, name))
                pages.append(path)
                with open(path, encoding="utf-8") as f:
                    ids[path] = set(re.findall(r'id="([^"]+)"', f.read()))
    if not pages:
        sys.exit(f"no HTML pages in {BOOK}: run `mdbook build docs` first")
    broken, checked = [], 0
    for page in sorted(pages):
        if os.path.relpath(page, BOOK) in SKIP:
            continue
        with open(page, encoding="utf-8") as f:
            text = f.read()
        main_text = text[text.find("<main>") : text.find("</main>")]
        for href in re.findall(r'href="([^"]+)"', main_text):
            href = html.unescape(href)
            if re.match(r"^[a-z][a-z0-9+.-]*:", href):
                continue
            path, _, fragment = href.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            checked += 1
            if not os.path.exists(target):
                broken.append(f"{os.path.relpath(page, BOOK)}: {href}: no such file")
            elif fragment and target.endswith(".html") and unquote(fragment) not in ids[target]:
                broken.append(f"{os.path.relpath(page, BOOK)}: {href}: no id #{fragment} there")
    for line in broken:
        print(line, file=sys.stderr)
    print(f"{checked} internal links checked, {len(broken)} broken", file=sys.stderr)
    sys.exit(1 if broken else 0)


main()
