"""The README and docs/: every relative link leads to a file that exists and, with a
#section, to a heading that exists (as GitHub names its anchors)."""
from __future__ import annotations

import collections
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading's gets GitHub's -1, -2... suffix."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found, times = set(), collections.Counter()
    for line in text.splitlines():
        if line.startswith("#"):
            base = anchor(line.lstrip("#"))
            found.add(f"{base}-{times[base]}" if times[base] else base)
            times[base] += 1
    return found


def broken_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, section = target.partition("#")
        dest = (page.parent / path) if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif section and dest.suffix == ".md" and section not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_link_in_the_docs_leads_somewhere():
    assert len(PAGES) > 2
    found = {page.name: broken_links(page) for page in PAGES}
    assert not any(found.values()), found


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](missing.md) [no heading](#nowhere)\n"
                    "```\n[in code](ignored.md)\n```\n## Usage\n## Usage\n"
                    "[second](#usage-1) [no third](#usage-2)\n")
    assert broken_links(page) == ["missing.md (no such file)", "#nowhere (no such heading)",
                                  "#usage-2 (no such heading)"]
