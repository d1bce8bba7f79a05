"""
Run the handout's section 7 experiments at CPU scale and draw their learning curves (results: EXPERIMENTS.md).

$ python experiments.py                      # every group: data prep, runs, plots (~55 min on 2 cores)
$ python experiments.py --only=lr,norm       # some groups; finished runs are skipped, so re-running is cheap
$ python experiments.py --accounting         # handout 3.6: parameters and FLOPs of GPT-2 small..XL (no training)

Every run is `python train.py config/exp_base.py <overrides> --out_dir=out/exp/<group>/<name>`: one small model
(d_model 128, 4 layers, context 128) on the ../shared/data TinyStories sample, the same number of tokens for every
run of a group (the same wall-clock in the 'budget' group). Plots go to assets/exp_<group>.png (val loss vs step;
vs wall-clock for 'budget') via plot.py.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from model import ModelConfig, TransformerLM, flops_breakdown

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data")
PY = sys.executable
TS_TEXT = os.path.join(SHARED, "tinystories_v2_sample.txt")
WEB_TEXT = os.path.join(SHARED, "webtext_snippets_2.8MB.txt")
OWT_VALID = os.path.join(SHARED, "owt_valid_head_150KB.txt")

# group -> [(run name, train.py overrides)]; 'base' (config/exp_base.py as is) joins every group's plot
GROUPS = {
    "lr": [("lr_1e-3", "--lr=1e-3"), ("lr_1e-2", "--lr=1e-2"), ("lr_3e-2", "--lr=3e-2"), ("lr_1e-1", "--lr=1e-1"),
           ("lr_3e-1", "--lr=3e-1"), ("lr_1", "--lr=1.0"), ("lr_1_noclip", "--lr=1.0 --grad_clip=0"),
           ("lr_10", "--lr=10.0")],
    # same tokens (1.0M) for every batch size; LR re-tuned for the extremes
    "batch": [("bs_1_lr_1e-3", "--batch_size=1 --max_steps=8000 --warmup_steps=800 --eval_interval=1600 --lr=1e-3"),
              ("bs_8", "--batch_size=8 --max_steps=1000 --warmup_steps=100 --eval_interval=200"),
              ("bs_128", "--batch_size=128 --max_steps=62 --warmup_steps=6 --eval_interval=12"),
              ("bs_128_lr_1e-2", "--batch_size=128 --max_steps=62 --warmup_steps=6 --eval_interval=12 --lr=1e-2")],
    "norm": [("no_norm", "--norm=none"), ("no_norm_lr_1e-3", "--norm=none --lr=1e-3"),
             ("no_norm_lr_1e-2", "--norm=none --lr=1e-2"), ("post_norm", "--norm=post"),
             ("layernorm", "--norm_type=layer")],
    "pos": [("nope", "--pos_emb=none"), ("learned", "--pos_emb=learned"), ("sinusoidal", "--pos_emb=sinusoidal")],
    "ffn": [("silu_4x", "--ffn=silu"), ("relu_4x", "--ffn=relu"), ("gelu_4x", "--ffn=gelu")],
    "tied": [("tied", "--tie_embeddings=True")],
    # issue 8: the leaderboard switches one at a time, then all together (config/leaderboard_cpu.py)
    "leaderboard": [("qk_norm", "--qk_norm=True"), ("relu2", "--ffn=relu2"), ("zero_init", "--zero_init_proj=True"),
                    ("softcap_30", "--logit_softcap=30.0"), ("muon", "--optimizer=muon"),
                    ("wsd", "--lr_schedule=wsd --decay_frac=0.3 --min_lr=0.0"), ("recipe", "config/leaderboard_cpu.py")],
    # issue 8 again, at equal wall-clock: every run gets 150 s (evaluations included) and fits its lr schedule into
    # them (time_schedule), so a switch that costs time has fewer steps to show for it
    "budget": [(name, f"{overrides} --max_time=150 --time_schedule=True --max_steps=100000") for name, overrides in [
        ("base", ""), ("base_lr_1e-2", "--lr=1e-2"), ("qk_norm", "--qk_norm=True"), ("relu2", "--ffn=relu2"),
        ("zero_init", "--zero_init_proj=True"), ("softcap_30", "--logit_softcap=30.0"), ("muon", "--optimizer=muon"),
        ("wsd", "--lr_schedule=wsd --decay_frac=0.3 --min_lr=0.0"), ("recipe", "config/leaderboard_cpu.py"),
        ("recipe_lr_1e-2", "config/leaderboard_cpu.py --lr=1e-2"),
        ("recipe_no_softcap", "config/leaderboard_cpu.py --logit_softcap=0.0"),
        ("recipe_no_softcap_lr_1e-2", "config/leaderboard_cpu.py --logit_softcap=0.0 --lr=1e-2")]],
    "data": [("webtext", "--train_data=data/web_train.bin --val_data=data/owt_valid.bin --tokenizer_dir=out/tok_web2k")],
}


def run(cmd):
    print("$", cmd, flush=True)
    subprocess.run(cmd, shell=True, check=True)


def prepare_data():
    """Tokenizers (vocab 2048) and token files for TinyStories and the web-text sample, once."""
    if not os.path.exists("data/tiny_train.bin"):
        run(f'{PY} bpe.py train --input {TS_TEXT} --vocab_size 2048 --special_tokens "<|endoftext|>" --out out/tok2k --quiet')
        run(f"{PY} tokenize_data.py --tokenizer out/tok2k --input {TS_TEXT} --output data/tiny_train.bin "
            f"--val_docs 500 --val_output data/tiny_valid.bin")
    if not os.path.exists("data/web_train.bin"):
        run(f'{PY} bpe.py train --input {WEB_TEXT} --vocab_size 2048 --special_tokens "<|endoftext|>" --out out/tok_web2k --quiet')
        run(f"{PY} tokenize_data.py --tokenizer out/tok_web2k --input {WEB_TEXT} --output data/web_train.bin")
        run(f"{PY} tokenize_data.py --tokenizer out/tok_web2k --input {OWT_VALID} --output data/owt_valid.bin")


def train(group, name, overrides):
    out = f"out/exp/{group}/{name}"
    if os.path.exists(os.path.join(out, "done")):
        return out  # finished (or stopped as diverged) before: keep it
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, "log.jsonl")):
        os.remove(os.path.join(out, "log.jsonl"))  # an interrupted run starts over
    # a diverging run stops with a non-finite loss (exit code 1); its log up to there is the result
    cmd = f"{PY} train.py config/exp_base.py {overrides} --out_dir={out}"
    print("$", cmd, flush=True)
    # one thread per run, `--jobs` runs at a time: tiny models use cores better side by side than split in two
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(os.path.join(out, "stdout.txt"), "w") as f:
        code = subprocess.run(cmd, shell=True, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        print(f"  (exit {code}: see {out}/stdout.txt)")
    open(os.path.join(out, "done"), "w").close()
    return out


def final_loss(out):
    """Last logged validation loss of a run (None if it never evaluated)."""
    rows = [json.loads(line) for line in open(os.path.join(out, "log.jsonl")) if line.strip()]
    vals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    return (vals[-1] if vals else None), (rows[-1]["time"] if rows else None)


def accounting():
    """Handout 3.6: forward FLOPs by component for GPT-2 sizes at context 1024, and AdamW's memory per parameter."""
    sizes = {"small": (768, 12, 12), "medium": (1024, 24, 16), "large": (1280, 36, 20), "xl": (1600, 48, 25)}
    print("| model (context 1024 unless noted) | params | forward TFLOPs per sequence | attn proj | attn scores | FFN | LM head |")
    print("|---|---|---|---|---|---|---|")
    for name, (d, L, H) in sizes.items():
        for T in (1024, 16384) if name == "xl" else (1024,):
            c = ModelConfig(vocab_size=50257, context_length=T, d_model=d, num_layers=L, num_heads=H, d_ff=4 * d)
            f = flops_breakdown(c, T)
            total = sum(f.values())
            with torch.device("meta"):  # shapes only: no memory for 2B parameters
                params = TransformerLM(c).num_params()
            label = f"GPT-2 {name}" + (f" (T={T})" if T != 1024 else "")
            print(f"| {label} | {params / 1e9:.2f}B | {total / 1e12:.1f} | " +
                  " | ".join(f"{100 * f[k] / total:.1f}%" for k in ("attn_proj", "attn_scores", "ffn", "lm_head")) + " |")
    print("\nAdamW keeps m and v (2 floats) per parameter next to the weight and its gradient: 4 x 4 bytes = 16 bytes"
          " per parameter in float32, before activations.")


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups: {','.join(GROUPS)}")
    p.add_argument("--accounting", action="store_true", help="print the FLOPs/parameter table and exit")
    p.add_argument("--jobs", type=int, default=os.cpu_count(), help="training runs at a time, one thread each")
    args = p.parse_args()
    if args.accounting:
        return accounting()
    groups = args.only.split(",")
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        sys.exit(f"error: unknown group(s) {unknown}: choose from {','.join(GROUPS)}")
    if not os.path.exists(TS_TEXT):
        sys.exit(f"error: {TS_TEXT} not found: the experiments train on the ../shared/data samples")
    prepare_data()
    runs = [("base", "base", "")] + [(g, name, overrides) for g in groups for name, overrides in GROUPS[g]]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda r: train(*r), runs))
    os.makedirs("assets", exist_ok=True)
    base = "out/exp/base/base"
    for g in groups:
        outs = [f"out/exp/{g}/{name}" for name, _ in GROUPS[g]]
        x = "time" if g == "budget" else "step"  # the budget runs have their own base, trained for the same time
        outs = outs if g == "budget" else [base] + outs
        logy = " --logy" if g == "budget" else ""  # twelve close curves: a log axis spreads their ends apart
        run(f"{PY} plot.py {' '.join(outs)} --metric=val_loss --x={x}{logy} --out assets/exp_{g}.png --title='{g}'")
        for out in outs:
            loss, secs = final_loss(out)
            print(f"  {out}: final val loss {loss if loss is None else round(loss, 4)} after {secs} s")


if __name__ == "__main__":
    main()
