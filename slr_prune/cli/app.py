"""The `slr-prune` application: the parser, one module per subcommand, errors handled once here.

Every option can also come from a YAML file given with --config (keys are the long option names
with dashes or underscores); its values go through the same types and choices as the command
line, and options on the command line win over the file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from ..atomic import is_disk_full
from ..errors import RunFolderBusyError, SpecError, StateError
from ..registry import UnknownNameError
from . import compare, demo, describe, evaluate, export, finetune, prune, search, structured, train
from .common import HelpFormatter
from .runfolder import DEFAULT_OUT, disk_full_line, run_folder_lock

__all__ = ["main", "build_parser", "RUN_FOLDER_COMMANDS"]

COMMANDS = (demo, train, prune, compare, evaluate, finetune, describe, structured, search, export)
"""Each has NAME, HELP, add_arguments(parser) and run(args)."""

EPILOG = """examples:
  slr-prune demo                                   # digits, SLR vs ADMM vs magnitude, under a minute on a CPU
  slr-prune train --model resnet18 --dataset cifar10 --data ~/data --epochs 200 --out runs/r18
  slr-prune prune --checkpoint runs/r18/dense.pt --method slr --ratio 0.9 --epochs 100 --out runs/r18-slr
  slr-prune prune --config configs/resnet18_cifar10_slr.yaml --data ~/data
  slr-prune compare --checkpoint runs/r18/dense.pt --methods slr,admm,magnitude --ratio 0.9 --epochs 30
  slr-prune evaluate --checkpoint runs/r18-slr/pruned.pt
  slr-prune export --checkpoint runs/r18-slr/pruned.pt --format onnx --out runs/r18-slr/export
  slr-prune describe --model resnet50 --form 2:4
  slr-prune structured --checkpoint runs/r56/dense.pt --criterion chip --flops-target 0.5   # remove filters
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slr-prune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Prune PyTorch models by constrained optimisation: SLR (surrogate Lagrangian "
                    "relaxation), with ADMM and magnitude pruning as baselines. Start with "
                    "'slr-prune demo'.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP.replace("%", "%%"), description=command.HELP,
                           formatter_class=HelpFormatter)
        p.add_argument("--config", default=None, help="YAML file of option values (the command line wins)")
        command.add_arguments(p)
    return parser


def _config_tokens(parser: argparse.ArgumentParser, command: str, path: str) -> tuple[list[str], Any]:
    """The --config file as command-line tokens (so argparse checks types and choices), and an
    inline `spec:` mapping if the file has one."""
    import yaml

    file = Path(path)
    if not file.is_file():
        parser.error(f"--config {path!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        parser.error(f"--config {path!r} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        parser.error(f"--config {path!r}{where}: not valid YAML ({getattr(e, 'problem', e)})")
    if not isinstance(data, dict):
        parser.error(f"--config {path!r} must hold a mapping of option: value")
    sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    actions = {a.dest: a for a in sub._actions if a.option_strings}  # noqa: SLF001
    tokens: list[str] = []
    inline = None
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest == "spec" and isinstance(value, dict):
            inline = value
            continue
        action = actions.get(dest)
        if action is None or dest in ("config", "help"):
            valid = sorted(d.replace("_", "-") for d in actions if d not in ("config", "help"))
            parser.error(f"--config {path!r}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                parser.error(f"--config {path!r}: {key} must be true or false, got {value!r}")
            tokens += [flag] if value else []
            continue
        if value is None:
            parser.error(f"--config {path!r}: {key} has no value")
        for item in value if isinstance(value, list) and isinstance(action, argparse._AppendAction) else [value]:  # noqa: SLF001
            if isinstance(item, dict | list) or isinstance(item, bool) and action.type is not None:
                parser.error(f"--config {path!r}: {key} must be a single value, got {item!r}")
            tokens += [flag, str(item)]
    return tokens, inline


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv; with --config, the file's options come first so the command line wins."""
    args = parser.parse_args(argv)
    tokens: list[str] = []
    inline = None
    if getattr(args, "config", None):
        tokens, inline = _config_tokens(parser, args.command, args.config)
        args = parser.parse_args([argv[0], *tokens, *argv[1:]])  # argv[0] is the command
    args.spec_inline = inline
    args.given = _given(parser, args.command, [*tokens, *argv[1:]])
    return args


def _given(parser: argparse.ArgumentParser, command: str, tokens: list[str]) -> list[str]:
    """The destinations of the options the user set (on the command line or in --config), so that
    an option with a default that nothing would use can be refused rather than dropped."""
    named = {t.split("=", 1)[0] for t in tokens if t.startswith("--")}
    sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    return sorted(a.dest for a in sub._actions if named & set(a.option_strings))  # noqa: SLF001


RUN_FOLDER_COMMANDS = tuple(DEFAULT_OUT)
"""The commands that write into --out: its folder is checked and locked before they compute."""

ERRORS = (SpecError, StateError, UnknownNameError, FileNotFoundError, FileExistsError, IsADirectoryError,
          PermissionError, RunFolderBusyError, ValueError, FloatingPointError)
"""Bad input or a refused run folder: one line and exit status 2."""


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the command in its locked run folder; bad input is one line, exit 2."""
    parser = build_parser()
    args = parse(parser, list(sys.argv[1:] if argv is None else argv))
    run = {c.NAME: c.run for c in COMMANDS}[args.command]
    resume = " with --resume" if hasattr(args, "resume") else ""
    try:
        with _run_folder(args):
            run(args)
    except KeyboardInterrupt:
        return _fail(args, f"interrupted; rerun the same command{resume} to continue", 130)
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            if isinstance(e, ERRORS):
                return _fail(args, str(e))
            raise
        return _fail(args, disk_full_line(e, bool(resume)))
    except ERRORS as e:
        return _fail(args, str(e))
    return 0


def _run_folder(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """The lock on the command's run folder (checked first), or nothing for a command that writes none."""
    if args.command in RUN_FOLDER_COMMANDS:
        return run_folder_lock(args.out, args.command)
    return contextlib.nullcontext()


def _fail(args: argparse.Namespace, message: str, code: int = 2) -> int:
    """Print one error line for `args.command` and return the exit status."""
    print(f"slr-prune {args.command}: error: {message}", file=sys.stderr)
    return code
