"""
Draw learning curves from the JSONL logs that train.py writes (out_dir/log.jsonl), several runs on one figure.

$ python plot.py out/lr_1e-3 out/lr_3e-3 --metric=val_loss --out curves.png
$ python plot.py out/run_a out/run_b --x=time --logy --out curves_time.png
$ python plot.py out/* --x=tokens --metric=train_loss --title="LR sweep"

Each run is a directory holding log.jsonl (or the .jsonl file itself); its legend name is the directory name.
Values far above where the runs typically start (or non-finite ones) are drawn at the top of the plot, so the runs
that did learn stay readable; a run whose loss went non-finite or above its start is labelled diverged and marked with an x.
"""
import argparse
import json
import math
import sys
from pathlib import Path

X_KEYS = {"step": "step", "time": "time", "tokens": "tokens"}  # --x choice -> log key
X_LABELS = {"step": "optimizer step", "time": "wall-clock (s)", "tokens": "tokens seen"}


def read_log(run, metric, x):
    """Return (name, xs, ys) for one run: the rows of its log.jsonl that carry the metric."""
    path = Path(run)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.exists():
        raise SystemExit(f"error: no log at {path}: pass run directories written by train.py (out_dir)")
    xs, ys = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get(metric) is None or row.get(X_KEYS[x]) is None:
            continue
        xs.append(row[X_KEYS[x]])
        y = row[metric]
        ys.append(float(y) if y is not None else math.nan)  # json writes NaN/Infinity for diverged losses
    name = path.parent.name if path.name == "log.jsonl" else path.stem
    return name, xs, ys


def clip_top(runs):
    """A y limit that keeps the runs that learned readable: a bit above the typical starting value (the median,
    so one run that starts far higher, e.g. without normalisation, does not squash the others)."""
    firsts = sorted(ys[0] for _, _, ys in runs if ys and math.isfinite(ys[0]))
    return 1.1 * firsts[len(firsts) // 2] if firsts else None


def diverged(ys):
    """A run diverged if its loss went non-finite or above where it started (even if it came back down later)."""
    return not all(math.isfinite(y) for y in ys) or max(ys) > ys[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (out_dir of train.py) or log.jsonl files")
    p.add_argument("--x", default="step", choices=sorted(X_KEYS), help="x axis")
    p.add_argument("--metric", default="val_loss", help="log key for y: val_loss, train_loss, lr, grad_norm")
    p.add_argument("--out", default="curves.png", help="output image (PNG, SVG, PDF by extension)")
    p.add_argument("--logy", action="store_true", help="log-scale y axis")
    p.add_argument("--title", default="", help="figure title")
    args = p.parse_args()

    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: plot.py needs matplotlib: pip install matplotlib")

    runs = [read_log(r, args.metric, args.x) for r in args.runs]
    runs = [r for r in runs if r[1]]
    if not runs:
        sys.exit(f"error: no run has '{args.metric}' in its log; try --metric=train_loss")
    top = clip_top(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for i, (name, xs, ys) in enumerate(runs):
        style = "-" if i < 10 else "--"  # the default color cycle has 10 colors: the next 10 runs are dashed
        # subtle: values above the limit (or non-finite) are drawn at the limit instead of stretching the axis
        shown = [y if top is None or (math.isfinite(y) and y <= top) else top for y in ys]
        if diverged(ys):
            end = next((i for i, y in enumerate(ys) if not math.isfinite(y)), len(ys) - 1)  # stop at a NaN
            line, = ax.plot(xs[:end + 1], shown[:end + 1], style, label=f"{name} (diverged)")
            ax.plot([xs[end]], [shown[end]], marker="x", markersize=9, color=line.get_color())
        else:
            ax.plot(xs, shown, style, label=name)
    if top is not None and not args.logy:
        ax.set_ylim(top=top)
    if args.logy:
        ax.set_yscale("log")
    ax.set_xlabel(X_LABELS[args.x])
    ax.set_ylabel(args.metric)
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
