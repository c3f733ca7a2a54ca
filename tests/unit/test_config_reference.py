"""One source of truth for configuration: the dataclasses in config.py.

README.md's reference block is generated from them (scripts/config-reference)
and must be up to date; every key needs a ``doc=``; the block, read back as
TOML, must load to exactly the built-in defaults with every key present; and
packaging/config.toml must load and set nothing to a value other than the
default, so the packaged file and the README cannot tell an admin two things.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mtasts_resolver.config import DEFAULT_LISTENERS, Config, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "config-reference"
BEGIN = "<!-- config-reference:"
END = "<!-- end config-reference -->"

SECTIONS = [f for f in dataclasses.fields(Config)]


def section_class(section: dataclasses.Field) -> type:
    default = getattr(Config(), section.name)
    return type(default[0]) if isinstance(default, tuple) else type(default)


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    start, end = text.index(BEGIN), text.index(END)
    block = text[start:end].split("```toml\n", 1)[1]
    return block.rsplit("```", 1)[0]


def test_readme_reference_is_generated_from_config_py() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("section", SECTIONS, ids=[s.name for s in SECTIONS])
def test_every_key_says_what_it_means(section: dataclasses.Field) -> None:
    undocumented = [f.name for f in dataclasses.fields(section_class(section)) if not f.metadata.get("doc")]
    assert not undocumented, f"add doc= to these [{section.name}] fields in config.py, then run " \
                             f"scripts/config-reference: {undocumented}"


def test_readme_block_loads_to_exactly_the_defaults() -> None:
    data = tomllib.loads(readme_block())
    assert config_from_dict(data) == Config()
    for section in SECTIONS:
        fields = {f.name for f in dataclasses.fields(section_class(section))
                  if getattr(section_class(section)(), f.name) is not None}
        written = data[section.name][0] if section.name == "listen" else data[section.name]
        assert set(written) >= fields, f"[{section.name}] keys missing from README: {fields - set(written)}"


def test_packaged_config_only_sets_defaults() -> None:
    path = REPO / "packaging" / "config.toml"
    loaded, data = load_config(path), tomllib.loads(path.read_text())
    defaults = Config()
    for name, table in data.items():
        if name == "listen":
            continue
        for key in table:
            assert getattr(getattr(loaded, name), key) == getattr(getattr(defaults, name), key), f"{name}.{key}"
    # The built-in listeners come first; further ones (Exim's readsocket) are additions, not other defaults.
    assert loaded.listen[:len(DEFAULT_LISTENERS)] == DEFAULT_LISTENERS
