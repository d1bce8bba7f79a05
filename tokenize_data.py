"""Turn a text corpus into the flat token file train.py memory-maps: X.bin (uint16 ids, uint32 if the vocab
is >= 65,536) plus a JSON sidecar X.bin.json (dtype, num_tokens, vocab_size, tokenizer_hash, source, ...).

$ python tokenize_data.py --tokenizer out/tokenizer --input ../shared/data/tinystories_v2_sample.txt \
      --output data/ts_train.bin --val_docs 500 --val_output data/ts_valid.bin   # carve a validation split
$ python tokenize_data.py --dataset tinystories                            # download TinyStoriesV2 into data/
$ python tokenize_data.py --dataset tinystories --tokenizer out/tokenizer  # -> data/ts_train.bin, data/ts_valid.bin
$ python tokenize_data.py --dataset owt --tokenizer out/tokenizer_owt      # -> data/owt_train.bin, data/owt_valid.bin

How it works: the file is cut into chunks of about --chunk_mb, each cut placed just before an <|endoftext|>.
Worker processes read and encode their chunk by byte offset; the parent writes the results in order to
X.bin.tmp with only a few chunks in flight (memory stays flat however big the file), then fsyncs and renames
it, so an interrupted run never leaves a truncated X.bin behind. Downloads resume from X.part files.
"""
import argparse
import collections
import ctypes
import gzip
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from array import array

import numpy as np

from bpe import Tokenizer, tokenizer_hash

EOT = "<|endoftext|>"  # the document separator of TinyStories and OpenWebText
DATA_DIR = "data"  # where --dataset files go; the one missing output directory we create for you
DATASETS = {  # name -> (base URL, [train file, valid file], prefix of the .bin outputs)
    "tinystories": ("https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/",
                    ["TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"], "ts"),
    "owt": ("https://huggingface.co/datasets/stanford-cs336/owt-sample/resolve/main/",
            ["owt_train.txt.gz", "owt_valid.txt.gz"], "owt"),
}
BLOCK = 1 << 20  # bytes read at a time when scanning for <|endoftext|> or downloading
try:  # glibc (Linux): malloc_trim gives the heap's free pages back to the OS (see encode_and_trim)
    malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # other systems: their own allocator, no trimming
    malloc_trim = None


def choose_dtype(vocab_size):
    """Smallest unsigned dtype that holds every id: uint16 halves disk and memmap traffic vs uint32."""
    return np.uint16 if vocab_size < 2**16 else np.uint32


def can_split_at_eot(special_tokens):
    """True when cutting the text just before an <|endoftext|> cannot change the tokens.

    encode() matches special tokens first and pre-tokenizes the text between them on its own, so a cut at the
    start of an <|endoftext|> match is invisible. That holds only if <|endoftext|> is a special token and no
    other special token could match across that start: one holding it ("<|endoftext|><|endoftext|>") or ending
    in a prefix of it ("x<|"). Otherwise the file is encoded as one chunk: exact, but memory grows with the file.
    """
    def crosses(s):  # a suffix of s (s itself included) is a prefix of EOT, or starts with EOT
        return any(EOT.startswith(s[i:]) or s[i:].startswith(EOT) for i in range(len(s)))
    return EOT in special_tokens and not any(crosses(s) for s in special_tokens if s != EOT)


def find_eot(f, pos, end):
    """Byte offset of the first <|endoftext|> starting in [pos, end) of binary file f, else end."""
    eot = EOT.encode()
    while pos < end:
        f.seek(pos)
        block = f.read(min(BLOCK, end - pos) + len(eot) - 1)  # overlap: catch a token across blocks
        i = block.find(eot)
        if i >= 0:
            return min(pos + i, end)
        pos += BLOCK
    return end


def rfind_eot(f, pos):
    """Byte offset of the last <|endoftext|> starting before pos in binary file f, else -1."""
    eot = EOT.encode()
    while pos > 0:
        lo = max(0, pos - BLOCK)
        f.seek(lo)
        block = f.read(pos - lo + len(eot) - 1)
        i = block.rfind(eot, 0, pos - lo + len(eot) - 1)
        if i >= 0:
            return lo + i
        pos = lo
    return -1


def carve_point(path, num_docs):
    """Byte offset where the last num_docs documents of path start (a document ends after its <|endoftext|>)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = rfind_eot(f, size)
        f.seek(max(pos, 0) + len(EOT))
        if pos >= 0 and not f.read().strip():  # the final <|endoftext|> closes the last document
            pos = rfind_eot(f, pos)
        for _ in range(num_docs - 1):  # step back over one more document each time
            pos = rfind_eot(f, pos)
    if pos < 0:
        raise SystemExit(f"error: --val_docs {num_docs} leaves no training text: {path} has fewer documents "
                         f"(separated by {EOT}); pass a smaller --val_docs")
    return pos + len(EOT)


def plan_spans(path, start, end, chunk_bytes, split):
    """Yield (start, end) byte spans covering [start, end), each cut just before an <|endoftext|>."""
    if not split:
        yield start, end
        return
    with open(path, "rb") as f:
        while start < end:
            cut = find_eot(f, start + chunk_bytes, end)  # a document longer than a chunk makes a bigger chunk
            yield start, cut
            start = cut


def encode_span(tok, path, span, dtype):
    """Read bytes [start, end) of path, encode them, and return the ids as raw dtype bytes."""
    start, end = span
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")  # subtle: cuts sit before an ASCII '<', so no character is split
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 at byte {start + e.start}; fix or re-download it") from e
    # array("I") turns the list of ints into uint32 about 3x faster than np.array does; numpy then checks and casts
    ids = np.frombuffer(array("I", tok.encode(text)), dtype=np.uintc)
    if ids.size and ids.max() > np.iinfo(dtype).max:
        raise ValueError(f"token id {ids.max()} does not fit {np.dtype(dtype).name}: "
                         f"the tokenizer's ids must be < its vocab_size ({tok.vocab_size})")
    return ids.astype(dtype).tobytes()


_worker_tok = None  # each pool worker's Tokenizer, set once by _init_worker instead of pickled per task


def _init_worker(tok):
    global _worker_tok
    _worker_tok = tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent cleans up and terminates the pool


_rss_limit = 0  # bytes: past this, encode_and_trim trims the heap


def rss_bytes():
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def encode_and_trim(tok, path, span, dtype):
    """encode_span, keeping the process's memory flat. subtle: glibc serves each chunk's big temporary lists from
    a heap that fragments, so a worker's RSS crept up (64 MB at 21 MB of input, 99 MB at 105 MB). malloc_trim hands
    the free pages back, but costs a few ms plus the page faults to get them again, so it runs only once the RSS
    has grown 16 MB past where the last trim left it (about every third chunk)."""
    global _rss_limit
    data = encode_span(tok, path, span, dtype)
    if malloc_trim is not None and rss_bytes() > _rss_limit:
        malloc_trim(0)
        _rss_limit = rss_bytes() + (16 << 20)
    return data


def _encode_in_worker(path, span, dtype):
    return encode_and_trim(_worker_tok, path, span, dtype)


def encode_spans(tok, path, spans, dtype, num_workers):
    """Yield (span, id bytes) in input order; a pool keeps at most 2 spans per worker in flight."""
    if num_workers <= 1:
        for span in spans:
            yield span, encode_and_trim(tok, path, span, dtype)
        return
    with multiprocessing.Pool(num_workers, _init_worker, (tok,)) as pool:  # exiting terminates the workers
        pending = collections.deque()  # (span, AsyncResult), oldest first
        for span in spans:
            pending.append((span, pool.apply_async(_encode_in_worker, (path, span, dtype))))
            if len(pending) >= 2 * num_workers:  # bounded window: wait for the oldest before reading on
                span0, result = pending.popleft()
                yield span0, result.get()
        while pending:
            span0, result = pending.popleft()
            yield span0, result.get()


def progress(label, done, total, t0, final=False):
    """Rewrite one stderr line: MB done, MB/s, ETA."""
    rate = done / max(time.time() - t0, 1e-9)
    eta = f", ETA {(total - done) / rate:.0f}s" if total and rate > 0 and not final else ""
    of_total = f"/{total / 1e6:.1f}" if total else ""
    sys.stderr.write(f"\r{label}: {done / 1e6:.1f}{of_total} MB, {rate / 1e6:.2f} MB/s{eta}   " + "\n" * final)
    sys.stderr.flush()


def write_atomic_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def tokenize_file(tok, tokenizer_dir, src, out, start=0, end=None, num_workers=1, chunk_bytes=BLOCK, quiet=False):
    """Encode bytes [start, end) of src into out (+ out.json sidecar); return the number of tokens."""
    end = os.path.getsize(src) if end is None else end
    dtype = choose_dtype(tok.vocab_size)
    num_workers = min(num_workers, -(-(end - start) // chunk_bytes))  # a file of one chunk needs no pool
    spans = plan_spans(src, start, end, chunk_bytes, can_split_at_eot(tok.special_tokens))
    num_tokens, t0 = 0, time.time()
    try:
        with open(out + ".tmp", "wb") as f:
            for (a, b), data in encode_spans(tok, src, spans, dtype, num_workers):
                f.write(data)
                num_tokens += len(data) // np.dtype(dtype).itemsize
                if not quiet:
                    progress(f"tokenizing {src} -> {out}", b - start, end - start, t0, final=(b == end))
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name says the file is complete
        if os.path.exists(out + ".json"):
            os.remove(out + ".json")  # a new .bin must never sit beside the old run's sidecar
        os.replace(out + ".tmp", out)
    finally:
        if os.path.exists(out + ".tmp"):
            os.remove(out + ".tmp")
    write_atomic_json(out + ".json", {
        "dtype": np.dtype(dtype).name, "num_tokens": num_tokens, "vocab_size": tok.vocab_size,
        "tokenizer_hash": tokenizer_hash(tokenizer_dir), "tokenizer_dir": str(tokenizer_dir),
        "source": str(src), "source_bytes": end - start})
    return num_tokens


def download(url, dest, quiet=False):
    """Fetch url to dest through dest.part, resuming a partial download with an HTTP Range request."""
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as r:
        if getattr(r, "status", None) != 206:  # the server (or a file:// URL) sent the whole file: start over
            have = 0
        total = have + int(r.headers.get("Content-Length") or 0)
        done, t0 = have, time.time()
        with open(part, "ab" if have else "wb") as f:
            while block := r.read(BLOCK):
                f.write(block)
                done += len(block)
                if not quiet:
                    progress(f"downloading {url}", done, total, t0)
    if not quiet:
        progress(f"downloading {url}", done, total, t0, final=True)
    os.replace(part, dest)


def prepare_dataset(name, data_dir, url_base=None, quiet=False):
    """Download (or find) the train and valid text of a named dataset in data_dir; return their paths."""
    base, files, _ = DATASETS[name]
    base = (url_base or base).rstrip("/") + "/"
    os.makedirs(data_dir, exist_ok=True)
    paths = []
    for fname in files:
        txt = os.path.join(data_dir, fname.removesuffix(".gz"))
        paths.append(txt)
        if os.path.exists(txt):
            continue  # already downloaded (and unzipped)
        dest = os.path.join(data_dir, fname)
        if not os.path.exists(dest):
            try:
                download(base + fname, dest, quiet)
            except urllib.error.URLError as e:
                raise SystemExit(f"error: cannot download {base + fname} ({getattr(e, 'reason', e)}). Offline? "
                                 f"Fetch {', '.join(files)} from {base} yourself and put them in {data_dir}/ "
                                 f"(.txt.gz or unzipped .txt), then rerun") from None
        if dest != txt:  # gunzip into txt.part, then rename, then drop the .gz
            if not quiet:
                print(f"unzipping {dest} -> {txt}", file=sys.stderr)
            with gzip.open(dest, "rb") as fin, open(txt + ".part", "wb") as fout:
                shutil.copyfileobj(fin, fout, BLOCK)
            os.replace(txt + ".part", txt)
            os.remove(dest)
    return paths


def check_output(out, src):
    """Fail early (before any encoding) on an output path we could not or should not write."""
    parent = os.path.dirname(out) or "."
    if os.path.normpath(parent) == DATA_DIR:
        os.makedirs(DATA_DIR, exist_ok=True)
    if not os.path.isdir(parent):
        raise SystemExit(f"error: output directory {parent}/ does not exist: create it (mkdir -p {parent}) "
                         f"or pass another --output")
    if os.path.isdir(out):
        raise SystemExit(f"error: output {out} is a directory; pass a file path like {out}/train.bin")
    if os.path.exists(src) and os.path.exists(out) and os.path.samefile(src, out):
        raise SystemExit(f"error: output {out} is the input file; pass another --output")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", help="tokenizer directory written by `python bpe.py train ... --out DIR`")
    p.add_argument("--input", help="UTF-8 text file to encode")
    p.add_argument("--output", help="token file to write, e.g. data/ts_train.bin")
    p.add_argument("--val_docs", type=int, default=0, help="carve the last N documents of --input into --val_output")
    p.add_argument("--val_output", help="token file for the carved validation documents, e.g. data/ts_valid.bin")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="download a CS336 corpus into --data_dir and, "
                   "with --tokenizer, write DATA_DIR/<ts|owt>_{train,valid}.bin")
    p.add_argument("--data_dir", default=DATA_DIR, help="where --dataset files go")
    p.add_argument("--url_base", help="download from this base URL (http(s):// or file://) instead")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    p.add_argument("--chunk_mb", type=float, default=1.0, help="approximate MB of text per encoding task")
    p.add_argument("--quiet", action="store_true", help="no progress line or summary")
    args = p.parse_args()

    jobs = []  # (source text, start byte, end byte or None, output .bin)
    if args.dataset:
        if args.input or args.output or args.val_docs:
            raise SystemExit("error: --dataset picks its own files; drop --input/--output/--val_docs")
        train_txt, valid_txt = prepare_dataset(args.dataset, args.data_dir, args.url_base, args.quiet)
        if not args.tokenizer:
            print(f"data ready: {train_txt}, {valid_txt}. Next: train a tokenizer (python bpe.py train ...) "
                  f"and rerun with --tokenizer DIR to write the .bin files")
            return
        prefix = os.path.join(args.data_dir, DATASETS[args.dataset][2])
        jobs = [(train_txt, 0, None, prefix + "_train.bin"), (valid_txt, 0, None, prefix + "_valid.bin")]
    else:
        if not (args.input and args.output and args.tokenizer):
            raise SystemExit("error: pass --tokenizer DIR --input FILE --output FILE.bin (or --dataset NAME)")
        if not os.path.isfile(args.input):
            raise SystemExit(f"error: input file {args.input} not found")
        if bool(args.val_docs) != bool(args.val_output):
            raise SystemExit("error: --val_docs N and --val_output FILE.bin go together")
        if args.val_docs < 0:
            raise SystemExit(f"error: --val_docs must be >= 0, got {args.val_docs}")
        cut = carve_point(args.input, args.val_docs) if args.val_docs else None
        jobs = [(args.input, 0, cut, args.output)]
        if args.val_docs:
            jobs.append((args.input, cut, None, args.val_output))
    if args.num_workers < 1 or args.chunk_mb <= 0:
        raise SystemExit("error: --num_workers must be >= 1 and --chunk_mb > 0")
    for src, _, _, out in jobs:
        check_output(out, src)
    try:
        tok = Tokenizer.load(args.tokenizer)
    except (FileNotFoundError, ValueError) as e:  # missing files, or vocab and merges that don't match
        raise SystemExit(f"error: {e}") from None

    for src, start, end, out in jobs:
        t0 = time.time()
        try:
            n = tokenize_file(tok, args.tokenizer, src, out, start, end, args.num_workers,
                              int(args.chunk_mb * 2**20), args.quiet)
        except ValueError as e:  # bad text or an id that does not fit the dtype
            raise SystemExit(f"error: {e}") from None
        except KeyboardInterrupt:
            raise SystemExit(f"\ninterrupted while writing {out}") from None
        nbytes = (os.path.getsize(src) if end is None else end) - start
        if not args.quiet:
            print(f"wrote {out}: {n:,} tokens, {nbytes / max(n, 1):.2f} bytes/token, "
                  f"{nbytes / 1e6 / (time.time() - t0):.2f} MB/s with {args.num_workers} workers")


if __name__ == "__main__":
    main()
