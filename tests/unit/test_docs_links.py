"""The documentation cites only what the repository holds: every result file a document names exists
under docs/results/, and every relative link in README.md and docs/ reaches a file, a folder or a
heading. A moved study or a renamed section fails here rather than in a reader's browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target): the target up to the closing parenthesis, without a title.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A result cited by its path from the repository root: docs/results/NAME.json, globs allowed.
RESULT_PATH = re.compile(r"docs/results/([\w.*-]+\.(?:json|png))")
# A result cited by its bare name in a table or in prose (sst2-final-lr-192.json): lowercase words
# joined by hyphens. Other files the documents name (r.json, gold_model.json, gold-dataset-RUN.jsonl)
# do not take that form.
BARE_RESULT = re.compile(r"(?<![\w./*-])([a-z0-9]+(?:[.-][a-z0-9]+)*-[a-z0-9.-]*[a-z0-9]\.(?:json|png))\b")


def prose_lines(document: Path) -> list[str]:
    """The document's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in document.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(document):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def broken_link(document: Path, target: str) -> str | None:
    """Why a relative link does not resolve, or None when it does (or is not relative)."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path_part, _, fragment = target.partition("#")
    destination = (document.parent / path_part).resolve() if path_part else document
    if not destination.exists():
        return f"{target}: no such file"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
        return f"{target}: no heading #{fragment} in {shown(destination)}"
    return None


def cited_results(document: Path) -> set[str]:
    text = document.read_text(encoding="utf-8")
    return set(RESULT_PATH.findall(text)) | set(BARE_RESULT.findall(text))


@pytest.mark.parametrize("document", DOCUMENTS, ids=shown)
def test_every_relative_link_resolves(document: Path) -> None:
    problems = [
        problem
        for line in prose_lines(document)
        for target in LINK.findall(line)
        if (problem := broken_link(document, target))
    ]
    assert not problems, f"{shown(document)}: " + "; ".join(problems)


@pytest.mark.parametrize("document", DOCUMENTS, ids=shown)
def test_every_cited_result_file_exists(document: Path) -> None:
    missing = sorted(name for name in cited_results(document) if not list(RESULTS.glob(name)))
    assert not missing, f"{shown(document)} cites results not under docs/results/: {missing}"


def test_every_result_file_a_make_target_writes_is_kept() -> None:
    """`make results`, `gold-vs-vanilla` and `experiments` rewrite the files the documents cite."""
    written = RESULT_PATH.findall((ROOT / "Makefile").read_text(encoding="utf-8"))
    assert len(written) > 5
    missing = sorted(name for name in written if not (RESULTS / name).exists())
    assert not missing, f"the Makefile writes results not kept under docs/results/: {missing}"


def test_the_checks_see_what_they_check(tmp_path: Path) -> None:
    """The patterns find real citations and real breakage, and pass over code blocks and files that
    are not results, so a passing run above means something."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Results at a glance\n\n"
        "See [the table](#results-at-a-glance), [nowhere](missing.md), [off](#no-such-heading),\n"
        "sst2-final-lr-192.json, docs/results/absent-192.json, `--out r.json`, gold_model.json.\n"
        "```sh\n[in code](not-checked.md)\n```\n",
        encoding="utf-8",
    )
    problems = [p for line in prose_lines(page) for t in LINK.findall(line) if (p := broken_link(page, t))]
    assert problems == [
        "missing.md: no such file",
        "#no-such-heading: no heading #no-such-heading in page.md",
    ]
    assert cited_results(page) == {"sst2-final-lr-192.json", "absent-192.json"}
    assert slug("Docker Compose (GPUs, production)") == "docker-compose-gpus-production"
    assert slug("On a GPU host: `bench/gpu_check.sh`") == "on-a-gpu-host-benchgpu_checksh"
