"""What the commands share: argument groups, config files, building the task, spec and configs,
loading checkpoints, and the run folder (args.yaml, report.json)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import adapters  # noqa: F401  (registers the built-in tasks)
from ..data.imagefolder import AUGMENTS
from ..errors import SpecError, StateError
from ..solvers import SOLVERS
from ..task import TASKS, task_name
from .runfolder import check_out, run_folder_lock

if TYPE_CHECKING:
    from ..artifact import Artifact
    from ..task import Task

__all__ = ["HelpFormatter", "task_args", "train_args", "spec_args", "solver_args", "bn_args", "run_folder_args",
           "make_task", "make_spec", "check_out", "run_folder_lock", "train_config", "solver_options", "method_configs",
           "check_unused_training", "check_cadences", "load_model", "write_run_files", "environment"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once, and not at all when it is None/False (nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


# ---- argument groups ------------------------------------------------------------------------
def task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and data")
    g.add_argument("--task", default=None, choices=TASKS.list(),
                   help="model family (default: the checkpoint's, else classification)")
    g.add_argument("--model", default=None, help="architecture name, e.g. digits_cnn, resnet18, resnet56, "
                   "vit_tiny, swin_t, yolov3-tiny, ufld_resnet18 (default: the checkpoint's, else the task's)")
    g.add_argument("--dataset", default=None,
                   help="classification: digits (ships with the package), cifar10 or imagefolder (read from --data)")
    g.add_argument("--data", default=None, help="dataset root folder or data yaml (never downloaded)")
    g.add_argument("--image-size", type=int, default=None, help="input size (default: the dataset's or task's)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classification: outputs of the head when wider than the data's classes (default: the "
                        "data's, or a plain state dict's head)")
    g.add_argument("--augment", default=None, choices=AUGMENTS,
                   help="image folders: training augmentation (default: imagenet from 128 px, light below)")
    g.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the task's constructor, e.g. hidden=512 or griding_num=50 for "
                        "--task lane (repeatable; an unknown key lists the valid ones)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="--task yolo: allow a model .pt that the safe (weights-only) loader refuses; a full "
                        "unpickle can run code, so only for files you trust")
    g.add_argument("--batch-size", type=int, default=64, help="training batch size")
    g.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and probe batches")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars (epoch lines still print)")


TRAIN_PHASE = ("epochs", "lr")
"""The TrainConfig flags each training phase has under its own prefix (--finetune-epochs)."""
TRAIN_SHARED = ("optimizer", "momentum", "weight_decay", "schedule", "amp")
"""The TrainConfig flags all phases of a command share (given once, unprefixed)."""


def train_args(p: argparse.ArgumentParser, prefix: str = "", epochs: int = 10, lr: float = 0.05,
               label: str = "training") -> None:
    """A training phase's flags, generated from TrainConfig; the unprefixed phase adds the shared ones."""
    from ..engine import TrainConfig
    from .options import add_config_flags

    g = p.add_argument_group(label)
    add_config_flags(g, TrainConfig, prefix=prefix, only=TRAIN_PHASE, defaults={"epochs": epochs, "lr": lr},
                     help={"epochs": f"{label} epochs"})
    if not prefix:
        add_config_flags(g, TrainConfig, only=TRAIN_SHARED)


def spec_args(p: argparse.ArgumentParser) -> None:
    from ..sets import FORMS
    from ..spec import form_options

    own = "; ".join(f"{n}: {', '.join(form_options(n))}" for n in FORMS.list() if form_options(n))

    g = p.add_argument_group("what to prune (a spec file, or --form with --ratio/--ratios)")
    g.add_argument("--spec", default=None, help="PruneSpec YAML/JSON file")
    g.add_argument("--form", default="unstructured", help=f"{', '.join(FORMS.list())}, or N:M such as 2:4")
    g.add_argument("--form-option", action="append", default=[], metavar="KEY=VALUE",
                   help=f"a parameter of --form (repeatable; VALUE is read as YAML, 'a,b' as a list): {own}")
    g.add_argument("--ratio", type=float, default=None, help="uniform prune ratio in [0, 1)")
    g.add_argument("--ratios", default=None, help="per-layer ratios: 'glob=ratio,glob=ratio'")
    g.add_argument("--global-budget", action="store_true",
                   help=f"one magnitude threshold across layers ({', '.join(FORMS.list(global_budget=True))})")
    g.add_argument("--exclude", action="append", default=[], help="parameter glob to keep dense (repeatable)")
    g.add_argument("--include-first", action="store_true", help="also prune the first conv/linear layer")
    g.add_argument("--include-last", action="store_true", help="also prune the last (classifier) layer")


def solver_args(p: argparse.ArgumentParser, **traits: Any) -> None:
    """The options of the solvers whose traits match `traits` (all solvers by default)."""
    from .options import add_entry_options

    g = p.add_argument_group("solver options (each applies to the methods in brackets)")
    add_entry_options(g, [SOLVERS.get(n) for n in SOLVERS.list(**traits)], "method")


def bn_args(p: argparse.ArgumentParser) -> None:
    from ..evaluate import BN_BATCHES

    p.add_argument("--bn-batches", type=int, default=BN_BATCHES,
                   help="training batches that re-estimate BatchNorm statistics after a hard prune; "
                        "both metrics are reported (0: no recalibration)")


def run_folder_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help="run folder (args.yaml, report.json, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the per-phase training checkpoints after the run finishes (else removed)")


# ---- building blocks ------------------------------------------------------------------------
def make_spec(args: argparse.Namespace, task: Task | None = None):
    """The spec from --spec, an inline config spec, or --ratio/--ratios/--form (plus the task's
    default exclusions, e.g. a detection head's output layers)."""
    from ..spec import PruneSpec, Rule, form_has_ratio, parse_form_options, parse_ratios

    default_exclude = list(getattr(task, "default_exclude", ()))
    options = {"exclude": args.exclude + [g for g in default_exclude if g not in args.exclude],
               "include_first": args.include_first, "include_last": args.include_last}
    given = [x for x in ("spec", "ratio", "ratios") if getattr(args, x) is not None]
    inline = getattr(args, "spec_inline", None)
    if args.global_budget and (args.spec or args.ratios or args.form != "unstructured"):
        got = _spec_flags(argparse.Namespace(**{**vars(args), "global_budget": False}))
        raise SpecError(f"--global-budget takes --ratio with --form unstructured (got {got})")
    items = getattr(args, "form_option", [])
    if items and (args.spec or (inline is not None and not given)):
        raise SpecError("--form-option sets a parameter of --form; a spec gives it in its rule's 'options'")
    form_options = parse_form_options(args.form, items)
    if inline is not None and not given:
        _refuse_spec_flags(args, "the config's spec")
        return PruneSpec.from_dict(inline)
    if not form_has_ratio(args.form) and "spec" not in given:
        if args.ratios or args.ratio:
            flag = "--ratios" if args.ratios else f"--ratio {args.ratio}"
            raise SpecError(f"--form {args.form} fixes its own density, so {flag} does not apply; drop it")
        return PruneSpec.uniform(0.0, form=args.form, form_options=form_options, **options)
    if len(given) != 1:
        raise SpecError("give exactly one of --spec FILE, --ratio R or --ratios 'glob=R,...' "
                        f"(got {', '.join('--' + g for g in given) or 'none'})")
    if args.spec:
        _refuse_spec_flags(args, f"--spec {args.spec}")
        return PruneSpec.load(args.spec)
    if args.ratios:
        ratios = parse_ratios(args.ratios, "--ratios")
        return PruneSpec([Rule(g, form=args.form, ratio=r, options=form_options) for g, r in ratios.items()],
                         **options)
    if args.global_budget:
        return PruneSpec.global_budget(args.ratio, **options)
    return PruneSpec.uniform(args.ratio, form=args.form, form_options=form_options, **options)


def _spec_flags(args: argparse.Namespace) -> str:
    """The spec-shaping flags the user set (all but --form have a False/empty default)."""
    flags = [f"--form {args.form}" if args.form != "unstructured" else "",
             "--spec" if args.spec else "", "--ratios" if args.ratios else "",
             "--global-budget" if args.global_budget else "", "--exclude" if args.exclude else "",
             "--include-first" if args.include_first else "", "--include-last" if args.include_last else ""]
    return ", ".join(f for f in flags if f)


def _refuse_spec_flags(args: argparse.Namespace, source: str) -> None:
    """A spec file (or a config's spec) says what to prune; flags that would shape a spec built
    from --ratio do not apply to it, and are refused rather than dropped."""
    flags = _spec_flags(argparse.Namespace(**{**vars(args), "spec": None, "ratios": None}))
    if flags:
        raise SpecError(f"{source} defines what to prune, so {flags} would be ignored: set it in the spec "
                        "(rules, exclude, include_first, include_last) or use --ratio")


def make_task(args: argparse.Namespace, artifact: Artifact | None = None):
    """The task named by --task; options missing on the command line come from the artifact."""
    from ..engine.trainer import check_seed
    from ..task import create_task

    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0),
                             ("--image-size", 1 if args.image_size is None else args.image_size, 1)):
        if value < low:
            raise ValueError(f"{flag} must be ≥ {low}, got {value}")
    try:
        check_seed(args.seed)
    except ValueError as e:
        raise ValueError(f"--seed: {e}") from e
    check_task_family(args, artifact)
    saved = dict(artifact.task or {}) if artifact is not None else {}  # every option the task recorded
    name = args.task or (artifact.task_name if artifact is not None else None) or "classification"
    given = {"model": args.model, "dataset": args.dataset, "data": args.data, "image_size": args.image_size,
             "augment": getattr(args, "augment", None), "num_classes": getattr(args, "num_classes", None),
             "trust_checkpoint": getattr(args, "trust_checkpoint", False) or None}
    given = {k: v for k, v in given.items() if v is not None}
    given.update(task_options(name, getattr(args, "task_option", [])))
    valid = {f.name for f in dataclasses.fields(TASKS.get(name).options)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ValueError(f"--task {name} takes no {', '.join('--' + k.replace('_', '-') for k in unknown)}")
    options = {**saved, **given}
    return create_task(name, **{k: v for k, v in options.items() if v is not None},
                       batch_size=args.batch_size, workers=args.workers, seed=args.seed)


def check_task_family(args: argparse.Namespace, artifact: Artifact | None) -> None:
    """A checkpoint made by one task family is not read as another: --task naming a different
    family than the checkpoint's is one line naming both (not a constructor's TypeError); one made
    with an unregistered task (a LoaderTask) cannot be rebuilt here, which is said in one line."""
    if artifact is not None and artifact.task and artifact.task_name is None and not args.task:
        raise ValueError(f"checkpoint {args.checkpoint!r} was made with a task that is not registered "
                         f"({artifact.task.get('class', 'a Python Task')}), so the command line cannot rebuild "
                         "it; in Python: load_artifact(path).build(your_model), or register the task")
    made = artifact.task_name if artifact is not None else None
    if args.task and made and args.task != made:
        raise ValueError(f"checkpoint {getattr(args, 'checkpoint', None)!r} was made by --task {made}, and "
                         f"--task {args.task} asks for another model family; drop --task (or give --task {made})")


def task_options(name: str, items: list[str]) -> dict[str, Any]:
    """--task-option KEY=VALUE items, each converted to the type of the task's option."""
    from .options import convert

    fields = {f.name: f for f in dataclasses.fields(TASKS.get(name).options)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--task-option {item!r}: give KEY=VALUE with KEY one of "
                             f"{', '.join(sorted(fields))} (the options of --task {name})")
        out[key] = convert(text.strip(), fields[key].type, f"--task-option {key}")
    return out


def train_config(args: argparse.Namespace, prefix: str = "", **overrides: Any):
    """The TrainConfig of the phase `prefix` from its flags, the shared ones (TrainConfig's defaults
    where the command has none) and the task flags --seed, --device and --no-progress."""
    from ..engine import TrainConfig
    from .options import config_values

    options = {**config_values(args, TrainConfig, only=TRAIN_SHARED),
               **config_values(args, TrainConfig, prefix=prefix, only=TRAIN_PHASE),
               "seed": args.seed, "device": args.device, "progress": not args.no_progress, "log_epochs": True}
    return TrainConfig(**{**options, **overrides})


def solver_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The options of the registered solver `method` given on the command line or in --config."""
    from .options import entry_options

    return entry_options(args, SOLVERS.get(method))


def method_configs(args: argparse.Namespace, methods: list[str],
                   exempt: frozenset[str] = frozenset()) -> dict[str, Any]:
    """{method: SolverConfig} from the solver flags each method uses.  A solver flag the user gave
    that no method uses is refused; one that only some use is noted once (compare shares one command
    line).  A method that does not train (one-shot magnitude) uses no cadence flag.  `exempt`: flags
    checked elsewhere (the layer-wise ones under --reconstruct)."""
    from ..solvers import CadenceConfig, solver_config
    from .options import given_entry_flags

    cadence = {f.name for f in dataclasses.fields(CadenceConfig)}
    given = {flag: name for flag, name in given_entry_flags(args, SOLVERS.entries()).items() if flag not in exempt}
    users: dict[str, list[str]] = {flag: [] for flag in given}
    configs = {}
    for method in methods:
        options = solver_options(args, method)
        config = solver_config(method, options)
        if not config.trains and cadence & set(options):
            config = solver_config(method, {k: v for k, v in options.items() if k not in cadence})
        used = set(options) - (set() if config.trains else cadence)
        for flag, name in given.items():
            if name in used:
                users[flag].append(method)
        configs[method] = config
    for flag, names in users.items():
        others = [m for m in methods if m not in names]
        if not names:
            when = " when they train" if given[flag] in cadence else ""
            raise ValueError(f"--{flag} applies to method {', '.join(_users(flag))}{when}, not to "
                             f"{', '.join(methods)} as configured: drop it or choose a method that uses it")
        if others:
            print(f"note: --{flag} applies to {', '.join(names)} only; {', '.join(others)} runs without it",
                  file=sys.stderr)
    return configs


def check_unused_training(args: argparse.Namespace, configs: dict[str, Any]) -> None:
    """Training options the user gave that no phase of the run would use are refused: --epochs > 0
    when no method trains (one-shot), the solver's learning rate when its phase does not run,
    fine-tuning's with --finetune-epochs 0, the shared optimizer options when neither phase runs
    (a value is never silently dropped)."""
    given = set(getattr(args, "given", ()))
    can_train = any(c.trains for c in configs.values())
    trains, tunes = can_train and args.epochs > 0, getattr(args, "finetune_epochs", 0) > 0
    unused = ["epochs"] if "epochs" in given and args.epochs > 0 and not can_train else []
    unused += ["lr"] if "lr" in given and not trains else []
    unused += ["finetune_lr"] if "finetune_lr" in given and not tunes else []
    unused += [f for f in (*TRAIN_SHARED, "no_amp") if f in given and not (trains or tunes)]
    if unused:
        flags = ", ".join("--" + f.replace("_", "-") for f in unused)
        one_shot = f"{', '.join(configs)} {'is' if len(configs) == 1 else 'are'} one-shot"
        phases = (f"no method trains ({one_shot})" if not can_train else
                  "solver training runs" if trains else "--epochs is 0")
        phases += "" if tunes else ", --finetune-epochs is 0"
        raise ValueError(f"{flags} would be unused: {phases}; drop it, or give a phase that uses it")


def check_cadences(task: Task, configs: Iterable[Any]) -> None:
    """Refuse, before any training, an --update-every longer than an epoch of the task's loader
    (the solver's `begin` checks the same, exactly, once training starts)."""
    every = [c for c in configs if c.trains and c.cadence.update_every]
    if every:
        batches = len(task.train_loader())
        for config in every:
            config.cadence.check(batches)


def _users(flag: str) -> list[str]:
    """The registered solvers that have the option of `--flag`."""
    from ..config import flag_name

    return [e.name for e in SOLVERS.entries()
            if any(flag_name(f) == flag and f.metadata.get("help") for f in dataclasses.fields(e.options))]


def load_model(args: argparse.Namespace, need_checkpoint: bool = True):
    """(task, model, artifact) from --checkpoint: any file slr_prune wrote (a resized model is
    rebuilt from its structure record) or a plain state dict; without one, a fresh model."""
    from ..artifact import head_rows, load_artifact

    artifact = load_artifact(args.checkpoint) if args.checkpoint else None
    if artifact is None and need_checkpoint:
        raise FileNotFoundError("--checkpoint is required")
    if artifact is not None:
        check_finite(artifact.state_dict, args.checkpoint)
    task = make_task(args, artifact)
    model = task.build_model()
    if artifact is not None:
        rows = head_rows(model, artifact.state_dict) if artifact.task is None else None
        name = task_name(task)
        takes = name is not None and "num_classes" in {f.name for f in dataclasses.fields(TASKS.get(name).options)}
        if rows is not None and getattr(args, "num_classes", None) is None and takes:
            print(f"note: {args.checkpoint!r} has a {rows}-way head; the model is built with --num-classes {rows}",
                  file=sys.stderr)
            task = make_task(argparse.Namespace(**{**vars(args), "num_classes": rows}), artifact)
            model = task.build_model()
        artifact.build(model, f"checkpoint {args.checkpoint!r} ({task.name})")
    return task, model, artifact


def check_finite(state: Any, path: str) -> None:
    """Bad input, not a diverged run: a NaN/Inf weight in a checkpoint is named before any compute."""
    import torch

    for name, t in (state.items() if isinstance(state, dict) else ()):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise StateError(f"checkpoint {path!r}: tensor {name!r} holds NaN or Inf values; it cannot be "
                             "pruned or evaluated (re-train it, or pick an earlier checkpoint)")


# ---- the run folder -------------------------------------------------------------------------
def environment(device: str | None = None) -> dict[str, Any]:
    """Versions and machine of a run, for its report."""
    import torch

    from .. import __version__

    env = {"slr_prune": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "device": device, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    return env


def settings(args: argparse.Namespace, **resolved: Any) -> dict[str, Any]:
    """Every option of the command (defaults included) plus what was resolved from them."""
    options = {k: v for k, v in sorted(vars(args).items()) if k not in ("spec_inline",)}
    return {"command": args.command, "argv": sys.argv[1:], "options": options, **resolved}


def write_run_files(out: str | Path, args: argparse.Namespace, results: Any, **resolved: Any) -> Path:
    """Write args.yaml (all settings) and report.json ({settings, results, environment}) into `out`."""
    import yaml

    from ..atomic import write_text_atomic
    from ..engine.distributed import is_main
    from ..report import write_json

    out = Path(out)
    if not is_main():
        return out / "report.json"
    out.mkdir(parents=True, exist_ok=True)
    run_settings = settings(args, **resolved)
    plain = json.loads(json.dumps(run_settings, default=str))
    write_text_atomic(yaml.safe_dump(plain, sort_keys=False), out / "args.yaml")
    return write_json(out / "report.json", {"settings": plain, "results": results,
                                            "environment": environment(getattr(args, "device", None))})
