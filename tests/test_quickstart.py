"""make quickstart on a tiny generated corpus: the whole chain (BPE -> token files -> train -> eval -> sample) in
seconds, so CI catches a broken link between the scripts. Re-running must skip every finished stage."""
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ("--d_model=32 --num_layers=1 --num_heads=2 --d_ff=64 --context_length=32 --batch_size=4 --max_steps=6 "
        "--warmup_steps=2 --eval_interval=3 --eval_iters=2 --log_interval=1 --device=cpu")


def make(*args):
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args, f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_quickstart_runs_end_to_end_and_skips_done_stages(tmp_path):
    rng = random.Random(0)
    names, things = ["Tom", "Lily", "Sam", "Mia"], ["ball", "cat", "tree", "cake", "boat"]
    stories = [f"Once upon a time, {rng.choice(names)} had a {rng.choice(things)}. "
               f"{rng.choice(names)} liked the {rng.choice(things)} very much.\n" for _ in range(300)]
    data = tmp_path / "stories.txt"
    data.write_text("<|endoftext|>\n".join(stories))
    args = [f"DATA={data}", f"OUT={tmp_path / 'qs'}", "VOCAB=300", "VAL_DOCS=30", "SAMPLE_TOKENS=16", "CONFIG=config/tiny_cpu.py",
            f"TRAIN_ARGS={TINY}", "quickstart"]
    first = make(*args)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    out = first.stdout + first.stderr
    assert "bpe.py train" in out and "tokenize_data.py" in out and "train.py" in out
    assert "perplexity" in out  # sample.py --eval_file printed the validation loss
    for f in ("tokenizer/vocab.json", "train.bin", "valid.bin", "ckpt.pt", "log.jsonl", "done"):
        assert (tmp_path / "qs" / f).exists(), f
    again = make("-n", *args)  # dry run: what a second `make quickstart` would do
    assert again.returncode == 0, again.stderr[-2000:]
    assert "bpe.py" not in again.stdout and "tokenize_data.py" not in again.stdout and "train.py" not in again.stdout
    assert "sample.py" in again.stdout  # only the eval + story are redone
