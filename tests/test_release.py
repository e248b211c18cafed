"""scripts/release.py (make patch / minor / major) on real throwaway git repositories."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TODAY = dt.date.today().isoformat()

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Release Test",
    "GIT_AUTHOR_EMAIL": "release@example.invalid",
    "GIT_COMMITTER_NAME": "Release Test",
    "GIT_COMMITTER_EMAIL": "release@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

CHANGELOG = """\
# Changelog

All notable changes to this project are documented here. The format follows
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/).

## [Unreleased]

### Added
- Dual-expert Wan 2.2 I2V workflow.

### Fixed
- Clear error when a model file is missing.

## [0.1.0] - 2025-01-02

### Added
- First release.

[Unreleased]: https://github.com/example/wan22-worker/compare/v0.1.0...HEAD
[0.1.0]: https://github.com/example/wan22-worker/releases/tag/v0.1.0
"""

EMPTY_UNRELEASED = """\
# Changelog

## [Unreleased]

### Added

## [0.1.0] - 2025-01-02

- First release.
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_repo(tmp_path: Path, changelog: str = CHANGELOG, version: str = "0.1.0") -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "release.py", repo / "scripts" / "release.py")
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    (repo / "VERSION").write_text(version + "\n")
    (repo / "CHANGELOG.md").write_text(changelog)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "tag", "-a", f"v{version}", "-m", f"v{version}")
    return repo


def run_release(repo: Path, part: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/release.py", part],
        cwd=repo, env={**os.environ, **GIT_ENV, **env}, capture_output=True, text=True, timeout=60,
    )


def snapshot(repo: Path) -> tuple[str, str, str, str, str]:
    """Everything a refused release must leave as it was."""
    return (
        (repo / "VERSION").read_text(),
        (repo / "CHANGELOG.md").read_text(),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "tag", "--list"),
        git(repo, "status", "--porcelain"),
    )


@pytest.mark.parametrize(("part", "expected"), [("patch", "0.1.1"), ("minor", "0.2.0"), ("major", "1.0.0")])
def test_bumps_version_dates_changelog_commits_and_tags(tmp_path: Path, part: str, expected: str) -> None:
    repo = make_repo(tmp_path)

    result = run_release(repo, part)

    assert result.returncode == 0, result.stderr
    assert (repo / "VERSION").read_text() == f"{expected}\n"
    assert git(repo, "log", "-1", "--format=%s").strip() == f"release: v{expected}"
    assert git(repo, "cat-file", "-t", f"v{expected}").strip() == "tag"  # annotated, not lightweight
    assert git(repo, "rev-parse", f"v{expected}^{{commit}}") == git(repo, "rev-parse", "HEAD")
    assert git(repo, "status", "--porcelain") == ""
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {"VERSION", "CHANGELOG.md"}
    assert "not pushed" in result.stdout


def test_changelog_gets_a_dated_section_under_a_fresh_unreleased(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)

    assert run_release(repo, "minor").returncode == 0

    text = (repo / "CHANGELOG.md").read_text()
    assert text.count("## [Unreleased]") == 1
    new_section = f"## [Unreleased]\n\n## [0.2.0] - {TODAY}\n\n### Added\n- Dual-expert Wan 2.2 I2V workflow.\n"
    assert new_section in text
    assert "### Fixed\n- Clear error when a model file is missing.\n\n## [0.1.0] - 2025-01-02" in text
    assert text.endswith(
        "[Unreleased]: https://github.com/example/wan22-worker/compare/v0.2.0...HEAD\n"
        "[0.2.0]: https://github.com/example/wan22-worker/compare/v0.1.0...v0.2.0\n"
        "[0.1.0]: https://github.com/example/wan22-worker/releases/tag/v0.1.0\n"
    )


def test_changelog_without_links_or_older_sections(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, changelog="# Changelog\n\n## [Unreleased]\n\n- Something new.\n")

    assert run_release(repo, "patch").returncode == 0

    assert (repo / "CHANGELOG.md").read_text() == (
        f"# Changelog\n\n## [Unreleased]\n\n## [0.1.1] - {TODAY}\n\n- Something new.\n\n"
    )


def test_make_patch_runs_the_script(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = make_repo(tmp_path)

    result = subprocess.run(
        ["make", "patch", f"PYTHON3={sys.executable}"],
        cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "describe", "--exact-match", "HEAD").strip() == "v0.1.1"


def test_the_first_release_tags_version_as_it_is_and_only_once(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    git(repo, "tag", "-d", "v0.1.0")  # nothing released yet
    before = snapshot(repo)
    refused = run_release(repo, "minor")
    assert refused.returncode == 1 and "there is no release yet" in refused.stderr and "make first-release" in refused.stderr
    assert snapshot(repo) == before
    result = run_release(repo, "first")
    assert result.returncode == 0, result.stderr
    assert (repo / "VERSION").read_text() == "0.1.0\n"
    assert git(repo, "describe", "--exact-match", "HEAD").strip() == "v0.1.0"
    assert "## [0.1.0] - " in (repo / "CHANGELOG.md").read_text()
    again = run_release(repo, "first")
    assert again.returncode == 1 and "there are releases already (v0.1.0)" in again.stderr


def test_refuses_a_dirty_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "CHANGELOG.md").write_text(CHANGELOG + "\nuncommitted line\n")
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr and "CHANGELOG.md" in result.stderr
    assert snapshot(repo) == before


def test_refuses_staged_changes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "other.txt").write_text("staged\n")
    git(repo, "add", "other.txt")
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr
    assert snapshot(repo) == before


def test_refuses_an_empty_unreleased_section(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, changelog=EMPTY_UNRELEASED)
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "'## [Unreleased]' section of CHANGELOG.md is empty" in result.stderr
    assert snapshot(repo) == before


def test_refuses_a_changelog_without_unreleased(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, changelog="# Changelog\n\n## [0.1.0] - 2025-01-02\n\n- First.\n")
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "no '## [Unreleased]' section" in result.stderr
    assert snapshot(repo) == before


def test_refuses_an_existing_tag(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    git(repo, "tag", "-a", "v0.1.1", "-m", "made by hand")
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "tag v0.1.1 already exists" in result.stderr
    assert snapshot(repo) == before


def test_refuses_a_version_that_is_not_semver(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, version="1.0")
    before = snapshot(repo)

    result = run_release(repo, "patch")

    assert result.returncode == 1
    assert "not a MAJOR.MINOR.PATCH version" in result.stderr
    assert snapshot(repo) == before


def test_push_only_with_push_1(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo = make_repo(tmp_path)
    git(repo, "remote", "add", "origin", str(remote))

    assert run_release(repo, "patch").returncode == 0
    assert git(remote, "tag", "--list").strip() == ""  # nothing pushed without PUSH=1
    changelog = (repo / "CHANGELOG.md").read_text()
    (repo / "CHANGELOG.md").write_text(changelog.replace("## [Unreleased]\n", "## [Unreleased]\n\n- More.\n", 1))
    git(repo, "commit", "-q", "-am", "more")

    result = run_release(repo, "patch", PUSH="1")

    assert result.returncode == 0, result.stderr
    assert "v0.1.2" in git(remote, "tag", "--list").split()
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")
