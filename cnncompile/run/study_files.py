"""What a study leaves in its tune directory besides the trials' run directories: each
candidate's spec.yaml text, trials.csv and the two plots."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from cnncompile.files import atomic_path, write_bytes

MIN_TRIALS_FOR_IMPORTANCES = 5


def spec_text(tree: dict, origin: Path, dest_dir: Path) -> str:
    """A candidate's tree as a spec file in dest_dir; a dataset path stays pointing at the same data."""
    tree = dict(tree)
    dataset = (tree.get("training") or {}).get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
        absolute = (origin.parent / dataset["path"]).resolve()
        tree["training"] = {**tree["training"], "dataset": {**dataset, "path": os.path.relpath(absolute, dest_dir.resolve())}}
    return yaml.safe_dump(tree, sort_keys=False, default_flow_style=None, width=100)


def write_trials_csv(study: optuna.Study, target: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "best_epoch", "best_value", *names, "params", "macs", "seconds",
                     "check_ms", "run", "reason"])
    for t in trials:
        a = t.user_attrs
        reason = a.get("rejected") or a.get("pruned") or a.get("surplus") or ""
        if t.state == TrialState.FAIL and not reason:
            reason = "failed (its process stopped); retried" if "failed_trial" not in t.system_attrs else "failed"
        check_ms = round(a["check_seconds"] * 1000, 3) if "check_seconds" in a else ""
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, a.get("best_epoch", ""),
                         a.get("best_value", ""),
                         *[t.params.get(n, "") for n in names], a.get("params", ""), a.get("macs", ""),
                         a.get("seconds", ""), check_ms, a.get("run", ""), reason])
    write_bytes(target, buffer.getvalue().encode())


def history_figure(complete: list, maximize: bool, name: str, metric: str):
    """Every trained trial's value and the best so far, by trial number."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([t.number for t in complete], [t.value for t in complete], "o", label="trial")
    best, running = [], None
    for t in complete:
        running = t.value if running is None else (max if maximize else min)(running, t.value)
        best.append(running)
    ax.step([t.number for t in complete], best, where="post", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered: no trial 0.5
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: optimisation history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_study(study: optuna.Study, out: Path, metric: str) -> None:
    """history.png (every trained trial's value and the best so far) and importances.png."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return
    fig = history_figure(complete, study.direction == optuna.study.StudyDirection.MAXIMIZE, study.study_name, metric)
    with atomic_path(out / "history.png") as tmp:
        fig.savefig(tmp, dpi=100)
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCES:
        return  # with fewer, Optuna's estimate says little (it warns that all come out equal)
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return  # no parameter varied among the complete trials
    if not importances:
        return
    fig = Figure(figsize=(7, 1 + 0.4 * len(importances)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {metric} (Optuna's default evaluator)")
    ax.set_title(f"{study.study_name}: parameter importances")
    fig.tight_layout()
    with atomic_path(out / "importances.png") as tmp:
        fig.savefig(tmp, dpi=100)
