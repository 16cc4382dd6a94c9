"""Write docs/reference/config.md from the config dataclasses' help metadata, the one place an option is described.

    python scripts/config_reference.py            # rewrite the page
    python scripts/config_reference.py --check    # exit 1 if the page is stale (tests/test_docs.py runs this check)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "config.md"

INTRO = """# Configuration reference

Generated from the config dataclasses by `python scripts/config_reference.py`; do not edit by hand.
Every option of a training run is set in a YAML file (`rewardlab train --config cfg.yaml`), with
`--set section.key=value`, or in Python (`load_config(path, overrides)`); `rewardlab options` prints the same
list. The server's, the generator's, best-of-n's and the tuner's options are their commands' flags (a switch that
is on by default is turned off with its `--no-` flag).
"""


def sections() -> list[tuple[str, str, type, str | dict]]:
    """(title, how it is set, dataclass, naming) for every page section, in order: an experiment section's options
    are named ``prefix + field``; a command's are its flags (the CLI's table of renamed flags)."""
    from rewardlab.best_of_n import BestOfNConfig
    from rewardlab.cli import config_parsers as cli
    from rewardlab.config import DataConfig, ModelConfig, MultimodalConfig, TrainConfig
    from rewardlab.generate import GenerateConfig
    from rewardlab.serve.config import ServeConfig
    from rewardlab.tune.settings import TuneSettings

    return [("data", "`data.*` in the config, or `--set data.KEY=VALUE`", DataConfig, "data."),
            ("model", "`model.*`", ModelConfig, "model."),
            ("multimodal", "`multimodal.*` (model.kind=multimodal)", MultimodalConfig, "multimodal."),
            ("train", "`train.*`", TrainConfig, "train."),
            ("rewardlab serve", "`rewardlab serve` flags", ServeConfig, cli.SERVE_FLAGS),
            ("rewardlab generate", "`rewardlab generate` flags", GenerateConfig, cli.GENERATE_FLAGS),
            ("rewardlab best-of-n", "`rewardlab best-of-n` flags", BestOfNConfig, cli.BEST_OF_N_FLAGS),
            ("rewardlab tune", "`rewardlab tune` flags", TuneSettings, cli.TUNE_FLAGS)]


def options(cls: type, naming: str | dict = "") -> list[tuple[str, object, str]]:
    """(name, default, help) of every field, nested dataclasses flattened: ``naming + field`` where ``naming`` is
    a prefix (the experiment's sections, as ``rewardlab options`` lists them), else the field's command-line flag
    (``naming``: the command's renamed flags)."""
    from rewardlab.cli.flags import flag_name, leaf_fields
    from rewardlab.config import describe, field_default

    if isinstance(naming, str):
        return describe(cls, naming)
    return [(flag_name(f, naming.get(name)), field_default(f), f.metadata.get("help", ""))
            for name, (f, _) in leaf_fields(cls).items()]


def _default(value: object) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def render() -> str:
    out = [INTRO]
    for title, how, cls, naming in sections():
        out += [f"## {title}", "", f"Set with {how}.", "", "| option | default | what it does |", "|---|---|---|"]
        for name, default, help_text in options(cls, naming):
            out.append(f"| `{name}` | {_default(default)} | {help_text.replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
