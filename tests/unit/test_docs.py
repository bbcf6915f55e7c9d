"""The READMEs: every relative link resolves (the file, and the heading an ``#anchor`` names), and
the top-level README stays a newcomer's page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
TOP_README_MAX_LINES = 200


def readmes() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check offline
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no {shown(resolved)})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {shown(resolved)})")
    return broken


def test_the_readmes_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in readmes()}
    assert {"README.md", "client/README.md", "servers/README.md", "deploy/README.md", "tests/README.md",
            "bench/README.md"} <= names  # fmt: skip


@pytest.mark.parametrize("path", readmes(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert not broken_links(path), f"{path.relative_to(ROOT)}: broken links {broken_links(path)}"


def test_the_top_readme_is_a_newcomers_page() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= TOP_README_MAX_LINES
    for way in ("genmesh text", "GenmeshClient", "curl ", "grpcurl ", "from openai import OpenAI", "/ui/"):
        assert way in text, f"README.md lost its example of {way!r}"
    for folder in ("client", "servers", "deploy", "tests", "bench"):
        assert f"]({folder}/README.md)" in text, f"README.md does not link {folder}/README.md"


def test_the_checker_catches_a_broken_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A heading: with `code`\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading-with-code) [gone](missing.md) [bad](other.md#not-a-heading) "
        "[web](https://example.org/x) [self](#top)\n\n# Top\n\n```\n[in code](nowhere.md)\n```\n"
    )
    broken = broken_links(page)
    assert len(broken) == 2, broken
    assert broken[0].startswith("missing.md") and broken[1].startswith("other.md#not-a-heading")
