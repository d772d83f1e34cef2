"""The README and docs/ cannot drift from the command line and the library.

Every ``hubedge`` command in a fenced block of ``README.md`` or ``docs/*.md`` goes through the CLI's own parser,
and an ``export`` command also through everything the CLI refuses before a model loads (formats, precisions,
options each format takes); every ``make`` target shown exists; the commands that need no model run for real;
every Python block compiles and names only attributes the packages have. ``tests/test_docs_run.py`` runs every
command shown for real, on tiny twins.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from hubedge.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
PROGRAM = re.compile(r"^(?:- run: )?(?:\.venv/bin/)?(?:python -m )?(hubedge|make)\s")
RUN_FOR_REAL = (["models"], ["models", "r101", "--json"], ["devices"])  # need no model, no network


def _blocks(language: str | None = None) -> list[tuple[str, str, str]]:
    """(document, language, text) of every fenced block."""
    return [(path.name, found.group(1), found.group(2)) for path in DOCS
            for found in FENCE.finditer(path.read_text(encoding="utf-8"))
            if language is None or found.group(1) == language]


def _commands() -> list[tuple[str, str, list[str]]]:
    """(document, program, arguments) of every hubedge or make command in a shell or CI block."""
    found = []
    for document, language, text in _blocks():
        if language not in ("bash", "sh", "yaml", ""):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            match = PROGRAM.match(line.strip())
            if match:
                words = shlex.split(line.strip()[match.end(1):], comments=True)
                found.append((document, match.group(1), words))
    return found


def test_the_docs_show_commands_at_all():
    """The extraction's own check: the README's recipes are found, so an empty list cannot pass the rest."""
    commands = _commands()
    assert sum(program == "hubedge" for _, program, _ in commands) >= 25
    assert ("README.md", "hubedge", ["bench", "artifacts/", "--threads", "2", "--baseline", "base.json",
                                     "--min-cosine", "0.9"]) in commands
    assert {document for document, _, _ in commands} >= {"README.md", "benchmarks.md", "catalog.md", "devices.md"}


def test_every_hubedge_command_shown_is_accepted_by_the_command_line(tmp_path, monkeypatch):
    from hubedge.cli.export import checked_plan

    monkeypatch.chdir(tmp_path)  # the docs' own calibration folders (my_photos/), as a user would have them
    photo = REPO / "calibration_data" / "skimage-coffee.jpg"
    refused = []
    for document, program, words in _commands():
        if program != "hubedge":
            continue
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                args = build_parser().parse_args(words)
        except SystemExit:
            refused.append(f"{document}: hubedge {shlex.join(words)}: {err.getvalue().strip().splitlines()[-1]}")
            continue
        if args.command == "export":
            if args.calibration_data:
                Path(args.calibration_data).mkdir(parents=True, exist_ok=True)
                (Path(args.calibration_data) / photo.name).write_bytes(photo.read_bytes())
            try:
                checked_plan(args)
            except Exception as error:  # HubedgeError and its kinds: what the user would be told
                refused.append(f"{document}: hubedge {shlex.join(words)}: {error}")
    assert not refused, "\n".join(refused)


def test_every_make_target_shown_exists():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    shown = {words[0] for _, program, words in _commands() if program == "make" and words}
    assert shown and shown <= targets, shown - targets


@pytest.mark.parametrize("words", RUN_FOR_REAL, ids=" ".join)
def test_the_commands_that_need_no_model_run(words, capsys):
    assert any(shown == words for _, program, shown in _commands() if program == "hubedge"), words
    assert main(words) == 0
    assert capsys.readouterr().out.strip()


def test_every_python_block_compiles_and_names_what_the_packages_have():
    missing = []
    for document, _, text in _blocks("python"):
        tree = ast.parse(text, filename=document)
        for node in ast.walk(tree):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.insert(0, node.attr)
                node = node.value
            if not (isinstance(node, ast.Name) and node.id in ("exporter", "runtimes", "benchmarks") and chain):
                continue
            target = importlib.import_module(f"hubedge.{node.id}")
            for name in chain:
                if not hasattr(target, name):
                    try:
                        target = importlib.import_module(f"{target.__name__}.{name}")
                        continue
                    except (ImportError, AttributeError):
                        missing.append(f"{document}: {node.id}.{'.'.join(chain)}")
                        break
                target = getattr(target, name)
                if not isinstance(target, type(importlib)):
                    break  # a function or class: what follows is its own attribute, or a call's result
    assert not missing, missing
