"""
Generate text from a checkpoint written by train.py (temperature, top-k, top-p, KV cache), or score a file's perplexity.

$ python sample.py --out_dir=out --prompt="Once upon a time" --max_new_tokens=256
$ python sample.py --out_dir=out --prompt=FILE:prompt.txt --temperature=0 --device=cpu
$ python sample.py --out_dir=out --eval_file=data/ts_valid.bin
$ python sample.py --out_dir=out --benchmark=True --max_new_tokens=512 --device=cpu

The checkpoint carries the model config and the tokenizer directory, so --out_dir is all it needs.
Errors (missing checkpoint or tokenizer, empty prompt, bad knob) are one line on stderr and exit status 1.
"""
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

from bpe import Tokenizer, tokenizer_hash
from configurator import configure
from model import ModelConfig, TransformerLM, softmax

# -----------------------------------------------------------------------------
# config: every knob can be overridden with --key=value (or a config file)
out_dir = 'out'  # directory holding ckpt.pt (train.py's out_dir)
prompt = "Once upon a time"  # text to continue, or FILE:path to read it from a file
max_new_tokens = 256  # tokens generated per sample (fewer if <|endoftext|> comes first)
temperature = 0.8  # 0 = greedy (argmax); < 1 sharper, > 1 flatter
top_k = 0  # keep only the k most likely tokens; 0 = off
top_p = 0.9  # nucleus: keep the fewest tokens whose mass reaches top_p (the top token always); 1.0 = off
num_samples = 1  # samples drawn one after another from one seeded RNG
seed = 1337  # same seed + same settings + same device = same text
device = 'auto'  # 'auto' (cuda, else mps, else cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
stream = True  # print text as tokens arrive (False: print each sample when it is done)
use_cache = True  # KV cache; False runs the full forward over the window every step (same tokens, slower)
tokenizer_dir = ''  # '' = the tokenizer_dir stored in the checkpoint's config
eval_file = ''  # perplexity mode: a .bin from tokenize_data.py, or any other file read as UTF-8 text
eval_batch_size = 8  # context_length windows per forward pass in perplexity mode
benchmark = False  # time max_new_tokens greedy tokens with and without the KV cache, print tokens/s and the ratio
bench_runs = 5  # timed runs per path in benchmark mode; the median is reported
_defaults = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))}
# -----------------------------------------------------------------------------


def filter_logits(logits, top_k=0, top_p=1.0):
    """Set every logit outside the top-k and outside the top-p nucleus to -inf. logits: (B, V).

    Top-k is applied first, top-p then works on the renormalized survivors (the order HF transformers uses).
    Ties break toward the lower token id (stable sort), so top-k keeps exactly k tokens.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V) each
    remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if top_k > 0:
        remove[:, top_k:] = True
    if top_p < 1.0:
        probs = softmax(sorted_logits.masked_fill(remove, -math.inf), dim=-1)
        # nucleus (Holtzman et al. 2020): keep a token while the mass *before* it is still < top_p, i.e. the
        # smallest prefix whose mass reaches top_p; the top token has 0 mass before it, so it always survives
        remove |= (probs.cumsum(dim=-1) - probs) >= top_p
    sorted_logits = sorted_logits.masked_fill(remove, -math.inf)
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)  # undo the sort


def sample_next(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Pick the next token for each row of logits (B, V) -> (B,) ids. temperature 0 = greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # ties go to the lowest id; top-k/top-p never drop the top token anyway
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()  # like no_grad, and skips autograd's version counters too: ~15% faster decoding
def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, eot_id=None,
             use_cache=True, generator=None):
    """Yield up to max_new_tokens new token ids after prompt_ids (one sequence); stop before yielding eot_id.

    Crop policy when the sequence outgrows context_length (shared by both paths, so they see the same
    window at every step): the model sees the window ids[start:]; when it would exceed context_length,
    start jumps so the window is the last context_length // 2 tokens. With the cache that is the moment
    cache.pos reaches context_length: the cache is rebuilt by re-prefilling the kept window, once every
    ~context_length / 2 tokens (sliding by one token each step would need a full re-prefill every step,
    since every cached K/V above layer 0 depends on the tokens that fell out of the window).
    subtle: a re-prefilled window starts again at position 0. With RoPE attention depends only on relative
    offsets, so this is exactly what the kept tokens would compute at any offset. With learned/sinusoidal
    absolute embeddings the model sees the window as a fresh sequence, positions 0.., as the uncached path
    (and nanoGPT's crop) does; it could not continue past context_length anyway, having no embedding there.
    """
    T_max = model.config.context_length
    keep = max(1, T_max // 2)
    dev = next(model.parameters()).device
    ids = list(prompt_ids)
    start = max(0, len(ids) - T_max)  # a prompt longer than the context keeps its last T_max tokens
    cache = None
    for _ in range(max_new_tokens):
        if len(ids) - start > T_max:
            start, cache = len(ids) - keep, None  # crop: the cache no longer matches the window
        if use_cache and cache is not None:
            x = ids[-1:]  # only the newest token; K/V of the rest of the window are cached
        else:
            x = ids[start:]  # prefill (or the full window every step without the cache)
            cache = model.new_kv_cache(1) if use_cache else None
        logits, _ = model(torch.tensor([x], dtype=torch.long, device=dev), kv_cache=cache)  # (1, len(x), V)
        next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator).item()
        if next_id == eot_id:
            return
        ids.append(next_id)
        yield next_id


def load_model(out_dir, dev):
    """Model from out_dir/ckpt.pt -> (model in eval mode on dev, checkpoint dict, checkpoint path)."""
    path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.isfile(path):
        raise SystemExit(f"error: no checkpoint at {path}: train one with `python train.py --out_dir={out_dir}` "
                         f"or point --out_dir at the directory holding ckpt.pt")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # tensors and plain data only: no code runs
        model = TransformerLM(ModelConfig(**ckpt['model_config']))
        model.load_state_dict(ckpt['model'])
    except Exception as e:  # truncated file, not a checkpoint, missing keys, shape mismatch...
        detail = (str(e).strip().splitlines() or [''])[0][:200]
        raise SystemExit(f"error: cannot load checkpoint {path} ({type(e).__name__}: {detail}); "
                         f"is it a ckpt.pt written by train.py?")
    return model.to(dev).eval(), ckpt, path


def find_tokenizer_dir(override, ckpt, ckpt_path):
    """The --tokenizer_dir override, else the checkpoint's tokenizer_dir, relative to the cwd or to the
    checkpoint's directory (so a moved out_dir still works) -> (dir, where it came from)."""
    if override:
        return override, 'from --tokenizer_dir'
    name = ckpt.get('config', {}).get('tokenizer_dir')
    if not name:
        raise SystemExit(f"error: {ckpt_path} names no tokenizer_dir in its config: pass --tokenizer_dir=DIR")
    ckpt_dir = os.path.dirname(ckpt_path)
    candidates = [(name, 'from checkpoint config, relative to the current directory'),
                  (os.path.join(ckpt_dir, name), 'from checkpoint config, relative to the checkpoint'),
                  (os.path.join(ckpt_dir, os.path.basename(os.path.normpath(name))), 'beside the checkpoint')]
    for d, where in candidates:
        if os.path.isdir(d):
            return d, where
    raise SystemExit(f"error: tokenizer directory {name!r} (from {ckpt_path}) not found in the current directory "
                     f"or beside the checkpoint: pass --tokenizer_dir=DIR")


def load_tokenizer(tok_dir):
    try:
        return Tokenizer.load(tok_dir)
    except (OSError, ValueError) as e:  # bpe.py names the missing/bad file and how to make it
        raise SystemExit(f"error: cannot load tokenizer from {tok_dir}: {e}")


def read_prompt(text, tok):
    """The prompt text (FILE:path reads a file) and its token ids; empty is an error."""
    if text.startswith('FILE:'):
        path = text[len('FILE:'):]
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: cannot read prompt file {path}: {e}")
    ids = tok.encode(text)
    if not ids:
        raise SystemExit("error: empty prompt: pass --prompt=\"some text\" or --prompt=FILE:path "
                         "(for unconditional samples use --prompt=\"<|endoftext|>\")")
    return text, ids


def read_tokens(path, tok, tok_dir):
    """A file as a 1-D token array: a .bin with the dtype from its .bin.json sidecar, anything else as text."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: eval_file {path} not found")
    if not path.endswith('.bin'):
        with open(path, encoding='utf-8') as f:
            return np.fromiter(tok.encode_iterable(f), dtype=np.int64)
    try:
        with open(path + '.json') as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read {path}.json ({e}): the sidecar records the dtype; "
                         f"make .bin files with tokenize_data.py")
    if meta.get('tokenizer_hash') not in (None, tokenizer_hash(tok_dir)):
        raise SystemExit(f"error: {path} was made by a different tokenizer than {tok_dir} (tokenizer_hash "
                         f"{meta['tokenizer_hash']} vs {tokenizer_hash(tok_dir)}): tokenize the text with the "
                         f"checkpoint's tokenizer, or pass the .txt")
    return np.memmap(path, dtype=meta['dtype'], mode='r')


@torch.no_grad()
def eval_loss(model, data, batch_size):
    """Mean next-token loss (nats) over a whole 1-D token array, in non-overlapping context_length windows.

    Every token but the first is predicted exactly once; each window starts without context, so this is
    a little pessimistic versus a sliding window. The last, shorter window is run on its own.
    """
    T = model.config.context_length
    n = len(data) - 1  # predicted tokens
    if n < 1:
        raise SystemExit("error: eval_file has fewer than 2 tokens: nothing to predict")
    if data.max() >= model.config.vocab_size:
        raise SystemExit(f"error: eval_file holds token id {data.max()} but the model has vocab_size "
                         f"{model.config.vocab_size}: was it tokenized with another tokenizer?")
    dev = next(model.parameters()).device
    full = n // T * T  # tokens covered by whole windows
    spans = [(a, min(a + batch_size * T, full)) for a in range(0, full, batch_size * T)]
    if n > full:
        spans.append((full, n))
    total = 0.0
    for a, b in spans:  # inputs data[a:b], targets data[a+1:b+1], as rows of min(T, b - a)
        x = torch.from_numpy(np.asarray(data[a:b], dtype=np.int64)).view(-1, min(T, b - a))
        y = torch.from_numpy(np.asarray(data[a + 1:b + 1], dtype=np.int64)).view_as(x)
        _, loss = model(x.to(dev), y.to(dev))
        total += loss.item() * y.numel()  # the loss is a mean; sum in float64 across batches
    return total / n


def print_stream(tok, token_ids, stream=True):
    """Print the text of token_ids as they arrive (stream) or once at the end; return the ids."""
    out, shown = [], 0  # ids so far, characters printed
    for t in token_ids:
        out.append(t)
        if stream:
            # subtle: decode everything and print only the new suffix; a multi-byte UTF-8 character split
            # across tokens decodes to U+FFFD until its last byte arrives, so hold trailing U+FFFD back
            text = tok.decode(out).rstrip('\ufffd')
            if len(text) > shown:
                print(text[shown:], end='', flush=True)
                shown = len(text)
    print(tok.decode(out)[shown:], flush=True)
    return out


def run_benchmark(model, ids, n, runs):
    """Median tokens/s for n greedy tokens (no EOT stop) with and without the KV cache, and their ratio.
    The two paths take turns, so a slow spell of a noisy machine hits both rather than one."""
    times, outputs = {True: [], False: []}, {}
    for _ in range(runs):
        for cached in (True, False):
            t0 = time.perf_counter()
            outputs[cached] = list(generate(model, ids, n, temperature=0, use_cache=cached))
            times[cached].append(time.perf_counter() - t0)
    rate = {cached: n / statistics.median(t) for cached, t in times.items()}
    for cached in (True, False):
        print(f"{'with' if cached else 'without'} KV cache: {rate[cached]:8.1f} tokens/s "
              f"(median of {runs}, {n} tokens)")
    print(f"speedup: {rate[True] / rate[False]:.1f}x; same tokens: {outputs[True] == outputs[False]}")


def check_config(c):
    """Reject bad knobs with one line each, before anything slow happens."""
    problems = [
        (c['temperature'] < 0, f"temperature must be >= 0 (0 = greedy), got {c['temperature']}"),
        (not 0 < c['top_p'] <= 1, f"top_p must be in (0, 1] (1 = off), got {c['top_p']}"),
        (c['top_k'] < 0 or c['top_k'] != int(c['top_k']), f"top_k must be an int >= 0 (0 = off), got {c['top_k']}"),
        (c['max_new_tokens'] < 0, f"max_new_tokens must be >= 0, got {c['max_new_tokens']}"),
        (c['num_samples'] < 1, f"num_samples must be >= 1, got {c['num_samples']}"),
        (c['eval_batch_size'] < 1, f"eval_batch_size must be >= 1, got {c['eval_batch_size']}"),
        (c['bench_runs'] < 1, f"bench_runs must be >= 1, got {c['bench_runs']}"),
    ]
    for bad, message in problems:
        if bad:
            raise SystemExit(f"error: {message}")


def main(argv=None):
    c = configure(_defaults, sys.argv[1:] if argv is None else argv)
    check_config(c)
    dev = c['device']
    if dev == 'auto':
        dev = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    model, ckpt, ckpt_path = load_model(c['out_dir'], dev)
    tok_dir, where = find_tokenizer_dir(c['tokenizer_dir'], ckpt, ckpt_path)
    tok = load_tokenizer(tok_dir)
    if tok.vocab_size > model.config.vocab_size:
        raise SystemExit(f"error: the tokenizer in {tok_dir} has {tok.vocab_size} tokens but the model only "
                         f"{model.config.vocab_size}: pass the tokenizer it was trained with (--tokenizer_dir=DIR)")
    print(f"loaded {ckpt_path} (step {ckpt.get('iteration', '?')}, {model.num_params() / 1e6:.2f}M params, "
          f"context_length {model.config.context_length}) on {dev}; tokenizer {tok_dir} ({where})", file=sys.stderr)

    if c['eval_file']:
        loss = eval_loss(model, read_tokens(c['eval_file'], tok, tok_dir), c['eval_batch_size'])
        print(f"{c['eval_file']}: loss {loss:.4f} nats/token, perplexity {math.exp(loss):.3f}")
        return
    text, ids = read_prompt(c['prompt'], tok)
    if len(ids) > model.config.context_length:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last "
              f"{model.config.context_length} (context_length)", file=sys.stderr)
    if c['benchmark']:
        return run_benchmark(model, ids, c['max_new_tokens'], c['bench_runs'])

    generator = torch.Generator(device=dev).manual_seed(c['seed'])
    n_tokens, elapsed = 0, 0.0
    for i in range(c['num_samples']):
        if i:
            print('\n' + '-' * 40)
        print(text, end='', flush=True)
        t0 = time.perf_counter()
        out = print_stream(tok, generate(model, ids, c['max_new_tokens'], c['temperature'], int(c['top_k']),
                                         c['top_p'], tok.eot_id, c['use_cache'], generator), c['stream'])
        elapsed += time.perf_counter() - t0
        n_tokens += len(out)
    print(f"{n_tokens} tokens in {elapsed:.2f} s: {n_tokens / max(elapsed, 1e-9):.1f} tokens/s "
          f"(KV cache {'on' if c['use_cache'] else 'off'})", file=sys.stderr)


if __name__ == "__main__":
    main()
