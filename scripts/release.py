#!/usr/bin/env python3
"""Cut a release: bump VERSION, date the changelog's Unreleased section, commit, tag.

    python scripts/release.py patch|minor|major      (make patch / make minor / make major)
    python scripts/release.py first                  (make first-release: VERSION as it is)

In the git repository of the current directory it:

1. refuses a working tree with uncommitted changes to tracked files, a CHANGELOG.md whose
   ``## [Unreleased]`` section is empty, and a tag ``vX.Y.Z`` that already exists — each with a
   message and exit code 1, before anything is written;
2. bumps the SemVer in ``VERSION`` (the project's one version source);
3. turns ``## [Unreleased]`` into ``## [X.Y.Z] - YYYY-MM-DD`` (today) under a fresh, empty
   ``## [Unreleased]``, and updates Keep-a-Changelog compare links at the bottom if there are any;
4. commits both files as ``release: vX.Y.Z`` and creates the annotated tag ``vX.Y.Z``;
5. pushes the commit and the tag to ``origin`` only when the environment has ``PUSH=1``.

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

PARTS = ("major", "minor", "patch", "first")
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
UNRELEASED = re.compile(r"^## \[Unreleased\][ \t]*$", re.MULTILINE)
NEXT_SECTION = re.compile(r"^## ", re.MULTILINE)
UNRELEASED_LINK = re.compile(r"^\[Unreleased\]:[ \t]*(?P<base>\S+)/compare/(?P<prev>\S+)\.\.\.HEAD[ \t]*$", re.MULTILINE)


class ReleaseError(Exception):
    """A reason not to release; the message says what to do."""


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


def bump(version: str, part: str) -> str:
    """``bump("1.4.2", "minor") == "1.5.0"``; the ``first`` release keeps the version."""
    match = SEMVER.match(version)
    if not match:
        raise ReleaseError(f"VERSION holds {version!r}, not a MAJOR.MINOR.PATCH version")
    if part == "first":
        return version
    major, minor, patch = (int(x) for x in match.groups())
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def unreleased_bounds(text: str) -> tuple[int, int, int]:
    """(start of the heading, start of its body, end of its body) of the Unreleased section."""
    heading = UNRELEASED.search(text)
    if not heading:
        raise ReleaseError("CHANGELOG.md has no '## [Unreleased]' section")
    following = NEXT_SECTION.search(text, heading.end())
    end = following.start() if following else len(text)
    # Link definitions at the bottom belong to no section.
    links = re.search(r"^\[[^\]]+\]:[ \t]*\S", text[heading.end():end], re.MULTILINE)
    if links:
        end = heading.end() + links.start()
    return heading.start(), heading.end(), end


def has_entries(body: str) -> bool:
    """True when the section says something: a line that is neither blank nor a ### heading."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in body.splitlines())


def rewrite_changelog(text: str, version: str, date: str) -> str:
    """The changelog with Unreleased dated as ``version`` and a fresh empty Unreleased on top."""
    start, body_start, end = unreleased_bounds(text)
    body = text[body_start:end]
    if not has_entries(body):
        raise ReleaseError(
            "the '## [Unreleased]' section of CHANGELOG.md is empty: describe the changes before releasing"
        )
    released = f"## [Unreleased]\n\n## [{version}] - {date}\n\n{body.strip(chr(10))}\n\n"
    text = text[:start] + released + text[end:].lstrip("\n")
    return update_links(text, version)


def update_links(text: str, version: str) -> str:
    """Point [Unreleased] at vX.Y.Z...HEAD and add [X.Y.Z] as previous...vX.Y.Z, when links exist."""
    link = UNRELEASED_LINK.search(text)
    if not link:
        return text
    base, prev = link.group("base"), link.group("prev")
    new = f"[Unreleased]: {base}/compare/v{version}...HEAD\n[{version}]: {base}/compare/{prev}...v{version}"
    return text[: link.start()] + new + text[link.end():]


def check_clean(root: Path) -> None:
    changes = git("status", "--porcelain", "--untracked-files=no", cwd=root)
    if changes:
        raise ReleaseError("the working tree has uncommitted changes; commit or stash them first:\n" + changes)


def check_history(root: Path, part: str) -> None:
    """The first release tags VERSION as it is and must be the first; a bump needs an earlier release."""
    tags = git("tag", "--list", "v*", cwd=root).split()
    if part == "first" and tags:
        raise ReleaseError(f"there are releases already ({', '.join(tags[-3:])}); use make patch, minor or major")
    if part != "first" and not tags:
        raise ReleaseError("there is no release yet: the first one is VERSION as it is; run make first-release")


def release(part: str, root: Path, *, today: dt.date | None = None, push: bool = False) -> str:
    """Do the release in ``root``; return the new version. Raises ReleaseError before any write."""
    root = Path(git("rev-parse", "--show-toplevel", cwd=root))
    version_file, changelog_file = root / "VERSION", root / "CHANGELOG.md"
    for path in (version_file, changelog_file):
        if not path.is_file():
            raise ReleaseError(f"{path.name} not found in {root}")
    check_clean(root)
    check_history(root, part)
    old_version = version_file.read_text(encoding="utf-8").strip()
    new_version = bump(old_version, part)
    tag = f"v{new_version}"
    if subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"], cwd=root,
                      capture_output=True).returncode == 0:
        raise ReleaseError(f"tag {tag} already exists; nothing was changed")
    old_changelog = changelog_file.read_text(encoding="utf-8")
    date = (today or dt.date.today()).isoformat()
    new_changelog = rewrite_changelog(old_changelog, new_version, date)

    version_file.write_text(new_version + "\n", encoding="utf-8")
    changelog_file.write_text(new_changelog, encoding="utf-8")
    try:
        git("add", "VERSION", "CHANGELOG.md", cwd=root)
        git("commit", "-q", "-m", f"release: {tag}", cwd=root)
    except ReleaseError:
        version_file.write_text(old_version + "\n", encoding="utf-8")
        changelog_file.write_text(old_changelog, encoding="utf-8")
        git("reset", "-q", "--", "VERSION", "CHANGELOG.md", cwd=root)
        raise
    git("tag", "-a", tag, "-m", f"Release {tag}", cwd=root)
    print(f"release: {old_version} -> {new_version}: committed 'release: {tag}' and tagged {tag}")
    if push:
        git("push", "origin", "HEAD", cwd=root)
        git("push", "origin", tag, cwd=root)
        print(f"release: pushed the commit and {tag} to origin")
    else:
        print(f"release: not pushed (PUSH=1 pushes); to publish: git push origin HEAD {tag}")
    return new_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bump VERSION, date CHANGELOG.md, commit and tag a release.")
    parser.add_argument("part", choices=PARTS, help="which SemVer number to increase (first: none, the first release)")
    args = parser.parse_args(argv)
    try:
        release(args.part, Path.cwd(), push=os.environ.get("PUSH") == "1")
    except ReleaseError as exc:
        print(f"release: refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
