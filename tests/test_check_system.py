"""`make` stops with one line when Java is missing or too old, or Python is outside 3.11-3.13."""
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "tools" / "check_system.py"


def run_check(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK)], env={"PATH": path}, capture_output=True, text=True)


def fake_java(folder: Path, banner: str) -> str:
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    java.chmod(0o755)
    return str(folder)


def test_missing_java(tmp_path):
    result = run_check(str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Java not found: install Java 17 (Debian: apt-get install openjdk-17-jre-headless)"]


def test_old_java(tmp_path):
    result = run_check(fake_java(tmp_path, 'openjdk version "1.8.0_392"'))
    assert result.returncode == 1 and "Java 8 at" in result.stderr and "too old for Spark 4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_java_17_passes(tmp_path):
    result = run_check(fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15'))
    assert result.returncode == 0 and result.stderr == ""


def pyenv_python(version: str) -> str:
    """A pyenv interpreter of ``version``; skipped where pyenv or that version is absent."""
    try:
        prefix = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        prefix = ""
    if not prefix or not (Path(prefix) / "bin" / "python3").exists():
        pytest.skip(f"no pyenv Python {version} on this machine")
    return str(Path(prefix) / "bin" / "python3")


@pytest.mark.parametrize("version, accepted", [("3.10.13", False), ("3.13.0", True)])
def test_python_range(tmp_path, version, accepted):
    result = subprocess.run([pyenv_python(version), str(CHECK)], capture_output=True, text=True,
                            env={"PATH": fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')})
    assert (result.returncode == 0) == accepted
    assert accepted or "outside 3.11-3.13" in result.stderr
