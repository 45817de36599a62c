"""Every program command in README.md and docs/ parses with the program's own flags, and every make
target they name exists: a renamed flag cannot leave the documentation behind."""
import re
import shlex

import pytest

from chap_mop.cli import chap_predict, chap_prep, chap_select
from conftest import PROJECT

PARSERS = {"chap-prep": chap_prep, "prep_petastorm_data.py": chap_prep, "chap-select": chap_select,
           "model_selection.py": chap_select, "chap_select.py": chap_select, "chap-predict": chap_predict,
           "make_predictions.py": chap_predict}
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def commands() -> list[tuple[str, list[str]]]:
    """(where, words) of every indented code line that runs one of the programs."""
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            first = line.split()[0] if line.strip() else ""
            if not line.startswith("    ") or not (first in PARSERS or first in ("python", "spark-submit")):
                continue
            words = shlex.split(line.split(" #", 1)[0], posix=True)
            for index, word in enumerate(words):
                if word.rsplit("/", 1)[-1].rstrip("')\"") in PARSERS:
                    found.append((f"{page.name}:{number}", [word.rsplit("/", 1)[-1].rstrip("')\""),
                                                            *words[index + 1:]]))
                    break
    return found


@pytest.mark.parametrize("where, words", commands(), ids=[where for where, _ in commands()])
def test_documented_commands_parse(where, words, capsys):
    module = PARSERS[words[0]]
    parser = module.build_parser(module.main.__annotations__["defaults"].__args__[0]())
    args = ["PLACEHOLDER" if word == "..." else word for word in words[1:]]
    try:
        parser.parse_args(args)
    except SystemExit as stop:
        pytest.fail(f"{where}: {' '.join(words)}: {capsys.readouterr().err.strip()} (exit {stop.code})")


def test_documented_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (PROJECT / "Makefile").read_text(), re.M))
    for page in PAGES:
        for target in re.findall(r"^\s+make ([\w-]+)", page.read_text(), re.M):
            assert target in targets, f"{page.name}: make {target}"
