"""The JSON contract's types, and the output file's atomic, private writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from iris_credexec import response
from iris_credexec.errors import Code, CredexecError
from iris_credexec.response import Failure, RevokeAck, Success, TokenType


def test_success_types_are_strict() -> None:
    doc = json.loads(response.render(Success(TokenType.JWT, "t.o.k", 1700000000)))
    assert doc == {
        "version": 1,
        "success": True,
        "token_type": TokenType.JWT.value,
        "id_token": "t.o.k",
        "expiration_time": 1700000000,
    }
    assert type(doc["version"]) is int and type(doc["expiration_time"]) is int and doc["success"] is True


def test_failure_types_are_strict_and_never_empty() -> None:
    doc = json.loads(response.render(Failure("X", "why")))
    assert doc == {"version": 1, "success": False, "code": "X", "message": "why"}
    empty = json.loads(response.render(Failure("", "")))
    assert empty["code"] == "INTERNAL" and empty["message"]


def test_revoke_ack() -> None:
    assert json.loads(response.render(RevokeAck())) == {"version": 1, "success": True}


def test_output_file_is_private_and_complete(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("old")
    response.write_output_file(str(out), Success(TokenType.ID_TOKEN, "a.b.c", 1800000000))
    assert json.loads(out.read_text())["id_token"] == "a.b.c"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_output_file_refuses_non_regular(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.json"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    if kind == "symlink":
        out.symlink_to(victim)
    elif kind == "directory":
        out.mkdir()
    else:
        os.mkfifo(out)
    with pytest.raises(CredexecError) as info:
        response.write_output_file(str(out), Success(TokenType.ID_TOKEN, "a.b.c", 1800000000))
    assert info.value.code is Code.OUTPUT_FILE_UNSAFE and "a.b.c" not in info.value.message
    assert victim.read_text() == "precious"


def test_output_file_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CredexecError) as info:
        response.write_output_file(str(tmp_path / "absent" / "out.json"), Success(TokenType.ID_TOKEN, "a.b.c", 1))
    assert info.value.code is Code.OUTPUT_FILE_UNSAFE
