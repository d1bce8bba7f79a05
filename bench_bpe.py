"""Speed, memory and compression of bpe.py, each next to a peer measured in the same run; prints markdown tables.

$ python bench_bpe.py                  # full run: a few minutes on 2 cores
$ python bench_bpe.py --quick          # smoke run: ~1 minute, smaller inputs, one repeat
$ python bench_bpe.py --repeats 5      # more runs per row (medians are reported)

Rows:
  train   our train_bpe vs HF `tokenizers` BpeTrainer (Rust; ByteLevel pre-tokenizer, same vocab size and special token,
          all 256 bytes in the initial alphabet) on the TinyStories sample repeated to ~20 MB at vocab 10000, and on
          corpus.en at 500. Each trainer runs in its own process, so peak RSS is per trainer. Both use every core.
  encode  our encode (cold cache: a new Tokenizer each run) and encode_iterable (a file's lines) vs tiktoken built from
          OUR vocab (same ids), single thread; plus the raw regex.findall rate.
  memory  peak RSS growth of encode_iterable over a 100 MB stream.
  tokenize_data  tokenize_data.py with 2 worker processes (file -> .bin) vs tiktoken encode_to_numpy on one thread,
          on the ~20 MB training input and on the sample repeated to ~100 MB (the pipeline's start-up and the
          workers' cold caches weigh less there, as on a real 2 GB corpus), and its peak RSS at 20 MB vs 100 MB.
  compression  bytes/token of TinyStories and OpenWebText-like samples with a TinyStories and a webtext tokenizer,
          and how long our encoder would take for the 825 GB Pile.
"""
import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bpe import GPT2_PAT, Tokenizer, train_bpe

HERE = os.path.dirname(os.path.abspath(__file__))
# -----------------------------------------------------------------------------
shared = os.path.join(HERE, "..", "shared")  # ../shared beside the checkout (data/ and fixtures/)
repeats = 3  # timed runs per row; the median is reported
train_mb = 20  # the TinyStories sample (5 MB) is repeated to about this many MB for the training row
vocab_size = 10000  # vocab of the training row and of the tokenizers used for encoding (the handout's TinyStories size)
stream_mb = 100  # size of the stream for the encode_iterable memory row
pile_gb = 825  # the Pile, for the "time to encode" estimate (handout 2.7)
# -----------------------------------------------------------------------------
EOT = "<|endoftext|>"

CHILD_OURS = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
from bpe import Tokenizer, train_bpe
t = time.perf_counter()
vocab, merges = train_bpe({path!r}, {vocab_size}, [{eot!r}], verbose=False)
seconds = time.perf_counter() - t
if {out!r}:
    Tokenizer(vocab, merges, [{eot!r}]).save({out!r})
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps(dict(seconds=seconds, merges=len(merges), rss=hwm,
                      worker_rss=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)))
"""
CHILD_HF = """
import json, time
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
trainer = trainers.BpeTrainer(vocab_size={vocab_size}, special_tokens=[{eot!r}], show_progress=False,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t = time.perf_counter()
tok.train([{path!r}], trainer)
seconds = time.perf_counter() - t
merges = len(json.loads(tok.to_str())["model"]["merges"])
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
print(json.dumps(dict(seconds=seconds, merges=merges, rss=hwm)))
"""
CHILD_STREAM = """
import sys, time
sys.path.insert(0, {here!r})
from bpe import Tokenizer
hwm = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
tok = Tokenizer.load({tok!r})
lines = open({path!r}, encoding="utf-8").readlines()
def stream(n_bytes):  # the file's lines over and over
    while n_bytes > 0:
        for line in lines:
            n_bytes -= len(line)
            yield line
before, t = hwm(), time.perf_counter()
n = sum(1 for _ in tok.encode_iterable(stream({mb} * 10**6)))
print(n, before, hwm(), {mb} / (time.perf_counter() - t))
"""


def run_child(code, **kw):
    """Run a code template in a fresh Python; return its last stdout line and the CPU seconds of its process tree."""
    usage = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
    cpu = usage()
    out = subprocess.run([sys.executable, "-c", code.format(here=HERE, eot=EOT, **kw)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"error: benchmark child failed:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1], usage() - cpu


def has_hf():
    try:
        import tokenizers  # noqa: F401  (optional peer: only this benchmark uses it)
        return True
    except ImportError:
        return False


def bench_train(path, vocab, label, out=""):
    """Median time of our trainer and HF's on path, alternating runs so machine noise hits both alike."""
    runs = {"ours": [], "hf": []}
    for _ in range(repeats):
        for name, code in [("ours", CHILD_OURS), ("hf", CHILD_HF)] if has_hf() else [("ours", CHILD_OURS)]:
            line, cpu = run_child(code, path=path, vocab_size=vocab, out=out)
            runs[name].append(dict(json.loads(line), cpu=cpu))
    cell = {}
    for name, rs in runs.items():
        if rs:
            med = lambda key: statistics.median(r[key] for r in rs)
            rss = f"{med('rss'):.0f} MB" + (f" + workers {med('worker_rss'):.0f} MB" if rs[0].get("worker_rss") else "")
            cell[name] = (med("seconds"), f"{med('seconds'):.2f} s ({med('cpu'):.1f} s CPU incl. start-up), "
                                          f"{rs[0]['merges'] / med('seconds'):,.0f} merges/s, peak RSS {rss}")
    ratio = f"{cell['ours'][0] / cell['hf'][0]:.2f}x time" if "hf" in cell else "-"
    return [label, cell["ours"][1], cell["hf"][1] if "hf" in cell else "HF tokenizers not installed", ratio]


def median_rate(fn, n_bytes):
    """MB/s from the median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n_bytes / 1e6 / statistics.median(times)


def bench_encode(tok_dir, path, label):
    """Rows: our encode (cold) and encode_iterable vs tiktoken on the same vocab, and the bare regex scan."""
    import tiktoken
    tok = Tokenizer.load(tok_dir)
    ranks = {t: i for i, t in tok.vocab.items() if i not in tok.special_ids.values()}
    enc = tiktoken.Encoding("ours", pat_str=GPT2_PAT.pattern, mergeable_ranks=ranks, special_tokens=tok.special_ids)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    n_bytes = len(text.encode("utf-8"))
    assert Tokenizer(tok.vocab, tok.merges, tok.special_tokens).encode(text) == enc.encode(text, allowed_special="all")

    def cold(method):  # a new Tokenizer each run, so no cache survives between runs
        fresh = Tokenizer(tok.vocab, tok.merges, tok.special_tokens)
        return fresh.encode(text) if method == "encode" else list(fresh.encode_iterable(io.StringIO(text)))

    fns = {"tiktoken": lambda: enc.encode(text, allowed_special="all"), "encode": lambda: cold("encode"),
           "encode_iterable": lambda: cold("iterable"), "findall": lambda: GPT2_PAT.findall(text)}
    cpu, wall = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):  # interleaved, one call each per round, so machine noise hits all alike
        for name, fn in fns.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(n_bytes / 1e6 / (time.process_time() - c))
            wall[name].append(n_bytes / 1e6 / (time.perf_counter() - w))
    cpu, wall = ({k: statistics.median(v) for k, v in d.items()} for d in (cpu, wall))
    cell = lambda k: f"{cpu[k]:.1f} MB/s ({wall[k]:.1f} wall)"
    rows = [[f"{label}: {name}", cell(key), f"tiktoken {cell('tiktoken')}",
             f"{cpu[key] / cpu['tiktoken']:.2f}x ({wall[key] / wall['tiktoken']:.2f}x wall)"]
            for name, key in [("encode, cold cache", "encode"), ("encode_iterable, lines", "encode_iterable"),
                              ("regex.findall alone", "findall")]]
    return rows, cpu["encode"]


def bytes_per_token(tok, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return len(text.encode("utf-8")) / len(tok.encode(text))


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print()


TD_CHILD = ("import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024)")


def run_tokenize_data(tok_dir, src, out, num_workers=2):
    """tokenize_data.py in a fresh process (entry scripts don't import each other): wall s, CPU s of it and its
    workers, peak RSS MB of its largest process. Wall time includes interpreter start-up (~0.2 s)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenize_data.py")
    cmd = [sys.executable, script, "--tokenizer", tok_dir, "--input", src, "--output", out,
           "--num_workers", str(num_workers), "--quiet"]
    res = subprocess.run([sys.executable, "-c", TD_CHILD, *cmd], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr)
    return tuple(map(float, res.stdout.split()))


def bench_tokenize_data(tok_dir, path, label, num_workers=2, repeats=3):
    """Row: tokenize_data.py with num_workers processes (file in, .bin out) vs tiktoken encode_to_numpy, one thread,
    same vocab and text; medians. Also MB per CPU-second, which other load on the machine distorts less."""
    import numpy as np
    import tiktoken
    tok = Tokenizer.load(tok_dir)
    ranks = {b: i for i, b in tok.vocab.items() if i not in tok.special_ids.values()}
    enc = tiktoken.Encoding("ours", pat_str=GPT2_PAT.pattern, mergeable_ranks=ranks, special_tokens=tok.special_ids)
    text, mb = open(path, encoding="utf-8", newline="").read(), os.path.getsize(path) / 1e6
    ours, peer = [], []  # (wall s, CPU s)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.bin")
        for _ in range(repeats):
            ours.append(run_tokenize_data(tok_dir, path, out, num_workers)[:2])
            t0, c0 = time.perf_counter(), time.process_time()
            ref = enc.encode_to_numpy(text, allowed_special="all")
            peer.append((time.perf_counter() - t0, time.process_time() - c0))
        assert np.array_equal(np.fromfile(out, dtype=np.uint16 if tok.vocab_size < 2**16 else np.uint32), ref)
    wall = [mb / statistics.median(w for w, _ in runs) for runs in (ours, peer)]
    cpu = [mb / statistics.median(c for _, c in runs) for runs in (ours, peer)]
    return [f"{label}: tokenize_data.py, {num_workers} workers vs 1 thread", f"{wall[0]:.1f} MB/s ({cpu[0]:.1f}/CPU-s)",
            f"tiktoken {wall[1]:.1f} MB/s ({cpu[1]:.1f}/CPU-s)", f"{wall[0] / wall[1]:.2f}x"]


def bench_tokenize_data_memory(tok_dir, path, sizes_mb=(20, 100), num_workers=2):
    """Peak RSS of tokenize_data.py's largest process on `path` repeated to each size: flat is the target."""
    data = open(path, "rb").read()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.txt")
        for size in sizes_mb:
            with open(src, "wb") as f:
                f.write(data * -(-size * 10**6 // len(data)))
            wall, _, rss = run_tokenize_data(tok_dir, src, src + ".bin", num_workers)
            print(f"tokenize_data.py on {os.path.basename(path)} repeated to {os.path.getsize(src) / 1e6:.0f} MB "
                  f"({num_workers} workers): peak RSS {rss:.0f} MB, {wall:.1f}s")


def main():
    global repeats, train_mb, vocab_size, stream_mb, shared
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 5 MB training input, 1 repeat, 10 MB stream")
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--train_mb", type=int, default=train_mb)
    p.add_argument("--vocab_size", type=int, default=vocab_size)
    p.add_argument("--stream_mb", type=int, default=stream_mb)
    p.add_argument("--shared", default=shared)
    args = p.parse_args()
    repeats, train_mb, vocab_size, stream_mb, shared = args.repeats, args.train_mb, args.vocab_size, args.stream_mb, args.shared
    if args.quick:
        repeats, train_mb, stream_mb = 1, 5, 10
    data, fixtures = os.path.join(shared, "data"), os.path.join(shared, "fixtures")
    ts, webtext = os.path.join(data, "tinystories_v2_sample.txt"), os.path.join(data, "webtext_snippets_2.8MB.txt")
    if not os.path.isfile(ts):
        raise SystemExit(f"error: {ts} not found: pass --shared DIR (the folder with data/ and fixtures/)")
    tmp = tempfile.mkdtemp(prefix="bench_bpe_")
    try:
        print(f"# bench_bpe.py: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, repeats={repeats} (medians)\n")
        # train: the sample repeated to ~train_mb MB (repetition multiplies every count, so the merges are the same)
        big = os.path.join(tmp, "tinystories_x.txt")
        with open(ts, "rb") as f:
            sample = f.read()
        copies = max(1, round(train_mb * 1e6 / len(sample)))
        with open(big, "wb") as f:
            f.write(sample * copies)
        print(f"training input: {ts} repeated {copies}x = {copies * len(sample) / 1e6:.1f} MB, written to {big}\n")
        ts_tok, web_tok = os.path.join(tmp, "tok_ts"), os.path.join(tmp, "tok_web")
        rows = [bench_train(big, vocab_size, f"train TinyStories {copies * len(sample) / 1e6:.0f} MB @{vocab_size}",
                            out=ts_tok),
                bench_train(os.path.join(fixtures, "corpus.en"), 500, "train corpus.en @500")]
        print_table(["benchmark", "ours (bpe.py)", "peer: HF tokenizers (Rust)", "ours / peer"], rows)

        vocab, merges = train_bpe(webtext, vocab_size, [EOT], verbose=False)
        Tokenizer(vocab, merges, [EOT]).save(web_tok)
        rows, ts_rate = bench_encode(ts_tok, ts, "TinyStories 5 MB, TinyStories tok")
        web_rows, web_rate = bench_encode(web_tok, webtext, "webtext 2.8 MB, webtext tok")
        print("encode: single thread, MB/s of CPU time (the machine may be shared), wall-clock in parentheses")
        print_table(["benchmark", "ours", "peer", "ours / peer"], rows + web_rows)

        n, before, after, rate = run_child(CHILD_STREAM, tok=ts_tok, path=ts, mb=stream_mb)[0].split()
        print(f"encode_iterable over a {stream_mb} MB stream (the TinyStories sample's lines again and again; "
              f"{int(n):,} tokens, {float(rate):.1f} MB/s wall): peak RSS {float(before):.0f} MB before, "
              f"{float(after):.0f} MB after: growth {float(after) - float(before):.1f} MB (target <= 50 MB)\n")

        toks = {"TinyStories tok": Tokenizer.load(ts_tok), "webtext tok": Tokenizer.load(web_tok)}
        if os.path.isfile(os.path.join(fixtures, "gpt2_vocab.json")):
            toks["GPT-2 (50K)"] = Tokenizer.from_files(os.path.join(fixtures, "gpt2_vocab.json"),
                                                       os.path.join(fixtures, "gpt2_merges.txt"), [EOT])
        texts = {"TinyStories V2 sample (train text of TS tok)": ts,
                 "TinyStories V1 valid 800 KB": os.path.join(data, "tinystories_v1_valid_800KB.txt"),
                 "OWT valid head 150 KB": os.path.join(data, "owt_valid_head_150KB.txt"),
                 "webtext 2.8 MB (train text of webtext tok)": webtext}
        rows = [[name] + [f"{bytes_per_token(tok, path):.2f}" for tok in toks.values()] for name, path in texts.items()]
        print(f"compression, bytes/token (our tokenizers: vocab {vocab_size})")
        print_table(["text"] + list(toks), rows)
        # tokenize_data.py (issue 3): the whole pipeline, file in, .bin out, 2 processes vs tiktoken on one thread
        print("tokenize_data.py: MB/s wall (MB per CPU-second in parentheses)")
        huge = os.path.join(tmp, "tinystories_xx.txt")
        with open(huge, "wb") as f:
            f.write(sample * (copies * max(1, round(stream_mb / train_mb))))
        print_table(["benchmark", "ours", "peer", "ours / peer"],
                    [bench_tokenize_data(ts_tok, path, f"TinyStories {os.path.getsize(path) / 1e6:.0f} MB", repeats=repeats)
                     for path in (big, huge)])
        bench_tokenize_data_memory(ts_tok, ts, sizes_mb=(20, stream_mb))
        print()
        for label, rate in [("TinyStories", ts_rate), ("webtext", web_rate)]:
            hours = pile_gb * 1e3 / rate / 3600
            print(f"the {pile_gb} GB Pile at our {label} encode rate ({rate:.1f} MB/s, one core): "
                  f"{hours:.0f} hours = {hours / 24:.1f} days")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
