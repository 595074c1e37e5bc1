"""Version and the commit it was built from (stamped by build/, else asked of git)."""

from __future__ import annotations

import os
import subprocess  # a fixed git command, for --version only  # nosec B404

from . import __version__


def commit() -> str:
    try:
        from ._build_info import COMMIT  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return str(COMMIT)
    except ImportError:
        pass
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(here, ".git")):
        return "unknown"
    try:
        out = subprocess.run(  # noqa: S603  # nosec B603 B607
            ["git", "-C", here, "rev-parse", "--short=12", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def describe() -> str:
    return f"iris-credexec {__version__} (commit {commit()})"
