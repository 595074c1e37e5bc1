"""The console entry point.

Executable mode is what every Google client runs, often dozens of times at task
start, so its common invocation (`[--policy P] [--service-account E]`) skips
the CLI framework's import. Everything else, including any flag this parser
does not know, goes to the full click CLI in main.py, which accepts the same
executable-mode flags with the same meaning.
"""

from __future__ import annotations

import os
import sys

_EXEC_FLAGS = {"--policy": "policy_flag", "--service-account": "service_account_flag"}


def parse_exec_flags(argv: list[str]) -> dict[str, str | None] | None:
    """The executable-mode flags, or None when `argv` is anything else."""
    flags: dict[str, str | None] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in _EXEC_FLAGS or _EXEC_FLAGS[name] in flags:
            return None
        if not eq:
            value = next(args, "")
            if not value or value.startswith("-"):
                return None
        flags[_EXEC_FLAGS[name]] = value
    return flags


def run_exec_mode(flags: dict[str, str | None]) -> int:
    from .fasthit import try_answer

    if try_answer(flags.get("policy_flag"), flags.get("service_account_flag"), os.environ):
        return 0
    from .exec_mode import Invocation, answer
    from .response import write_stdout

    write_stdout(answer(Invocation(environ=os.environ, **flags)))
    return 0


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    flags = parse_exec_flags(argv)
    if flags is not None:
        return run_exec_mode(flags)
    from .main import main

    return main(argv)
