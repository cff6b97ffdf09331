"""The README is a short front door and every relative link in it and in docs/ leads somewhere."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows) or ")".
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)")
INLINE_CODE = re.compile(r"`[^`]*`")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text):
    """The lines outside fenced code blocks (a link inside code is not a link)."""
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def heading_anchors(text):
    """GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces to '-',
    a repeated heading numbered -1, -2, ..."""
    anchors, seen = set(), {}
    for line in prose_lines(text):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(text):
    for line in prose_lines(text):
        line = INLINE_CODE.sub("", line)
        yield from INLINE_LINK.findall(line)
        yield from REFERENCE_LINK.findall(line)


def broken_links(document):
    """Every relative link of a markdown file whose file is missing, or whose anchor names no
    heading of the markdown file it points to, with the reason."""
    problems = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        if URL_SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = document if not path_part else (document.parent / path_part).resolve()
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(
            linked.read_text(encoding="utf-8")
        ):
            problems.append(f"{target}: no heading with that anchor")
    return problems


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` section: here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md) [fine](other.md#a-code-section-here) [fine](#page) [web](https://x.org/y)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [bad here](#nowhere)\n"
        "```sh\n[in code](not-a-link.md)\n```\n"
        "`[inline code](not-a-link-either.md)`\n"
        "[ref]: ../absent/file.txt\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with that anchor",
        "#nowhere: no heading with that anchor",
        "../absent/file.txt: no such file",
    ]


def test_repeated_headings_get_numbered_anchors():
    assert heading_anchors("# Run\n\n## Run\n\n## Run\n") == {"run", "run-1", "run-2"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_an_existing_file_and_heading(document):
    assert broken_links(document) == []


def test_the_docs_folder_holds_the_pages_the_readme_points_to():
    linked_pages = {
        target.partition("#")[0]
        for target in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
        if target.startswith("docs/")
    }
    pages = {f"docs/{path.name}" for path in DOCUMENTS[1:]}
    assert pages, "docs/ has no pages"
    assert pages <= linked_pages, f"pages the README does not link: {sorted(pages - linked_pages)}"


def test_the_readme_is_a_short_front_door_with_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < README_MAX_LINES
    assert "make demo" in readme
    assert "make test" in readme
