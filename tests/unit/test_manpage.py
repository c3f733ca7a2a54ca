"""mtasts-resolver(8) names every subcommand and option the CLI has, and its required sections."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mtasts_resolver.cli import _parser

MAN = (Path(__file__).resolve().parents[2] / "packaging" / "mtasts-resolver.8").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _unescaped(text: str) -> str:
    return text.replace("\\-", "-")


@pytest.mark.parametrize("section", ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "EXIT STATUS", "FILES"])
def test_the_page_has_its_sections(section):
    assert re.search(rf"^\.SH {section}$", MAN, re.MULTILINE)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_is_described_with_its_options(name):
    page = _unescaped(MAN)
    assert re.search(rf"^\.B {re.escape(name)}\b", page, re.MULTILINE), f"no .B {name} in the man page"
    for action in _subcommands()[name]._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert option in page, f"{name} {option} is not in the man page"


def test_every_global_option_is_described():
    page = _unescaped(MAN)
    for action in _parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help", "--version"):
                assert option in page, option
