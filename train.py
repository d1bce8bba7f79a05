"""Train the Transformer LM on memmapped token files: learning curves, safe checkpoints, exact resume, multi-GPU.

    $ python train.py config/tiny_cpu.py                                  # CPU: learns ../shared/data in minutes
    $ python train.py config/train_tinystories.py                         # one GPU, the handout's setup
    $ python train.py config/train_tinystories.py --resume=True           # continue from out_dir/ckpt.pt
    $ torchrun --standalone --nproc_per_node=8 train.py config/train_tinystories.py --batch_size=16 --grad_accum_steps=8

Data: X.bin token files with X.bin.json sidecars, from tokenize_data.py. Every knob below can be set in a
config file or as --key=value (configurator.py). Each eval writes out_dir/ckpt.pt (model, optimizer, config,
RNG and data-stream state) and every log line goes to out_dir/log.jsonl as well (plot it with plot.py).
"""
import dataclasses
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

from bpe import TOKENIZER_FILES, tokenizer_hash
from configurator import configure
from model import ModelConfig, TransformerLM
from optim import AdamW, Muon, clip_grad_norm, cosine_lr, wsd_lr

# ----------------------------------------------------------------------------- config
# I/O
out_dir = 'out'  # ckpt.pt and log.jsonl go here
train_data = 'data/ts_train.bin'  # token file from tokenize_data.py; its sidecar X.bin.json is checked
val_data = 'data/ts_valid.bin'  # held-out token file, same tokenizer
tokenizer_dir = 'out/tokenizer'  # must match the data's tokenizer_hash (if present); stored for sample.py
resume = False  # True: continue from out_dir/ckpt.pt with its config, overridden by this command's
# model: ModelConfig fields, same names (see model.py)
vocab_size = 10000  # must equal the data's vocab_size
context_length = 256  # T, tokens per training window
d_model = 512  # C, residual stream width
num_layers = 4  # Transformer blocks
num_heads = 16  # H; head dim D = d_model / num_heads
d_ff = None  # None -> derived: 8/3 d_model rounded to 64 for swiglu (512 -> 1344), else 4 d_model
rope_theta = 10000.0  # RoPE base
norm = 'pre'  # 'pre' | 'post' | 'none'
norm_type = 'rms'  # 'rms' | 'layer'
pos_emb = 'rope'  # 'rope' | 'none' | 'learned' | 'sinusoidal'
ffn = 'swiglu'  # 'swiglu' | 'silu' | 'relu' | 'gelu' | 'relu2' (ReLU squared, 2-matrix FFN)
tie_embeddings = False  # share token_embeddings and lm_head weights
qk_norm = False  # RMSNorm on each head's queries and keys before attention
zero_init_proj = False  # attention output and FFN w2 start at zero: every block starts as the identity
logit_softcap = 0.0  # 0 = off; else logits = cap * tanh(logits / cap), e.g. 30.0
fused = False  # model fast path: PyTorch's fused kernels, same math
# optimization (AdamW + cosine schedule, handout section 4)
optimizer = 'adamw'  # 'adamw' | 'muon' (Muon on the blocks' matrices, AdamW with lr on the rest)
muon_lr = 0.02  # Muon's peak lr; the schedule scales it by the same factor as lr
muon_weight_decay = 0.0  # decoupled decay of the Muon matrices, lr * this per step
lr_schedule = 'cosine'  # 'cosine' | 'wsd' (warmup, flat, linear decay over the last decay_frac of the run)
decay_frac = 0.2  # wsd only: fraction of the run's steps spent decaying to min_lr
batch_size = 32  # B, sequences per micro-batch in each process
grad_accum_steps = 1  # micro-batches per optimizer step over ALL processes (a multiple of their number)
lr = 1e-3  # peak learning rate, reached after warmup
min_lr = 1e-4  # the cosine ends here
warmup_steps = 100  # linear warmup from 0, in optimizer steps
cosine_steps = 0  # step at which the cosine reaches min_lr; 0 -> the end of the run (max_steps, or max_time)
weight_decay = 0.1  # decoupled; only on matmul weights (model.param_groups)
beta1 = 0.9  # AdamW first-moment decay
beta2 = 0.95  # second-moment decay: 0.95 (not 0.999) is steadier for LM training
eps = 1e-8  # AdamW denominator epsilon
grad_clip = 1.0  # max global gradient L2 norm; 0 = no clipping (the norm is still logged)
foreach = True  # AdamW fast path: one kernel per op for all tensors (bit-identical results)
# budget
max_steps = 0  # optimizer steps; 0 -> total_tokens / tokens per step
total_tokens = 327_680_000  # training tokens (the handout's budget), used when max_steps = 0
max_time = 0.0  # wall-clock seconds (resumes included), checked at log steps; then final eval + ckpt. 0 = none
time_schedule = False  # True: the lr schedule ends at max_time, max_steps is only a cap (the loop re-fits the
#   schedule's length every step to the steps max_time allows at the pace so far; needs max_time)
# evaluation and logging
eval_interval = 500  # steps between validation + checkpoint
eval_iters = 20  # validation batches over fixed windows (the same every eval); -1 = the whole file
log_interval = 10  # steps between log lines; loss and grad norm are read from the device only here
skip_nonfinite = False  # True: skip steps with a non-finite grad norm (a host sync per step); False: stop
wandb_log = False  # also log to Weights & Biases (imported only then)
wandb_project = 'cs336-a1'  # W&B project and run names
wandb_run_name = 'run'  # e.g. 'lr3e-3'
# system
device = 'auto'  # 'auto' (cuda > mps > cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'  # autocast: 'auto' (bfloat16 on CUDA, else float32) | 'bfloat16' | 'float32'
compile = False  # torch.compile the model (faster on GPU after a minute of compiling)
peak_flops = 989e12  # per-device peak for MFU: H100 SXM dense bf16
seed = 1337  # model init and data order
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, str, type(None)))}
# -----------------------------------------------------------------------------


def has_tokenizer(tokenizer_dir):
    return all(os.path.exists(os.path.join(tokenizer_dir, f)) for f in TOKENIZER_FILES)


def open_tokens(path, vocab_size, tokenizer_dir, context_length):
    """np.memmap of a token file, after checking its sidecar against the model config and the tokenizer."""
    meta_path = path + '.json'
    for p in (path, meta_path):
        if not os.path.exists(p):
            raise SystemExit(f"error: {p} not found; make it with `python tokenize_data.py --tokenizer DIR "
                             f"--input TEXT --output {path}` (or point --train_data/--val_data at it)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        dtype, num_tokens = np.dtype(meta['dtype']), meta['num_tokens']
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {meta_path} is not a valid sidecar ({type(e).__name__}: {e}); re-run tokenize_data.py")
    if meta.get('vocab_size') != vocab_size:
        raise SystemExit(f"error: {path} was tokenized with vocab_size={meta.get('vocab_size')} but the model has "
                         f"vocab_size={vocab_size}; pass --vocab_size={meta.get('vocab_size')} or re-tokenize")
    if has_tokenizer(tokenizer_dir):
        if tokenizer_hash(tokenizer_dir) != meta.get('tokenizer_hash'):
            raise SystemExit(f"error: {path} was made by a different tokenizer than {tokenizer_dir} (hash "
                             f"{meta.get('tokenizer_hash')} vs {tokenizer_hash(tokenizer_dir)}); fix --tokenizer_dir "
                             f"or re-tokenize")
    if os.path.getsize(path) != num_tokens * dtype.itemsize:
        raise SystemExit(f"error: {path} has {os.path.getsize(path)} bytes but its sidecar says {num_tokens} "
                         f"{dtype} tokens: the file is truncated or stale; re-run tokenize_data.py")
    if num_tokens <= context_length:
        raise SystemExit(f"error: {path} holds {num_tokens} tokens, not more than context_length={context_length}; "
                         f"use more data or a smaller --context_length")
    return np.memmap(path, dtype=dtype, mode='r')


def windows(data, starts, context_length, device):
    """Inputs x = data[s : s+T] and targets y = data[s+1 : s+1+T] for each start s -> two (B, T) int64 tensors."""
    x = torch.from_numpy(np.stack([data[s:s + context_length] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[s + 1:s + 1 + context_length] for s in starts]).astype(np.int64))
    device = torch.device(device)
    if device.type == 'cuda':  # pinned host memory lets the copy run asynchronously with the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def get_batch(data, batch_size, context_length, device, generator=None, rank=0, world_size=1):
    """batch_size random windows (handout 5.1), starts uniform over all valid ones, 0 .. len(data)-T-1 (the last
    window's target ends on the last token). With DDP every rank draws the starts for all ranks from the same
    generator and keeps its slice, so N processes see exactly the batches of one process accumulating N times."""
    starts = torch.randint(len(data) - context_length, (world_size * batch_size,), generator=generator)
    return windows(data, starts[rank * batch_size:(rank + 1) * batch_size].tolist(), context_length, device)


@torch.no_grad()
def evaluate(model, data, starts, batch_size, context_length, device, autocast, rank=0, world_size=1):
    """Mean loss over the windows at `starts` (split across ranks, then summed). Every window has T targets,
    so the mean of per-window losses is the per-token mean."""
    model.eval()
    mine = starts[rank::world_size]
    loss_sum = torch.zeros((), device=device)  # sum of per-window losses
    for i in range(0, len(mine), batch_size):
        x, y = windows(data, mine[i:i + batch_size], context_length, device)
        with autocast:
            _, loss = model(x, y)
        loss_sum += loss.float() * len(x)
    total = torch.stack([loss_sum, torch.tensor(float(len(mine)), device=device)])  # (loss sum, windows)
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def save_checkpoint(model, optimizer, iteration, out, **extra):
    """Write model + optimizer state, the iteration and any extra entries to a path or file object. A path is
    written to path.tmp, fsynced, then renamed over path: a crash mid-save leaves the previous file intact."""
    state = {k.removeprefix('module.').replace('_orig_mod.', ''): v for k, v in model.state_dict().items()}
    ckpt = {'model': state, 'optimizer': optimizer.state_dict(), 'iteration': iteration, **extra}
    if not isinstance(out, (str, os.PathLike)):
        torch.save(ckpt, out)
        return
    tmp = f"{out}.tmp"
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(tmp, out)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(src, model, optimizer):
    """Restore model and optimizer from a path or file object written by save_checkpoint; return the iteration."""
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    model.load_state_dict(ckpt['model'])
    optimizer.load_state_dict(ckpt['optimizer'])
    return ckpt['iteration']


def read_checkpoint(path):
    """torch.load a training checkpoint, or exit with one line saying what is wrong with it."""
    if not os.path.exists(path):
        raise SystemExit(f"error: --resume=True but {path} does not exist; train without --resume first "
                         f"or point --out_dir at the run")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        missing = {'model', 'optimizer', 'iteration', 'config', 'rng'} - set(ckpt)
        assert not missing, f"missing keys {sorted(missing)}"
        return ckpt
    except Exception as e:
        reason = (str(e).strip().splitlines() or [''])[0]
        raise SystemExit(f"error: {path} is not a readable training checkpoint ({type(e).__name__}: {reason}); "
                         f"restore a good copy or start a new --out_dir")


def rng_state(data_rng):
    """Every random state the run depends on. numpy's is stored as plain lists so weights_only loading works."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {'python': random.getstate(), 'numpy': [name, keys.tolist(), pos, has_gauss, gauss],
            'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            'data': data_rng.get_state()}


def set_rng_state(state, data_rng):
    random.setstate(state['python'])
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])
    data_rng.set_state(state['data'])


def pick_device(name, local_rank):
    """'auto' -> cuda (this process's GPU under torchrun), else mps, else cpu."""
    if name == 'auto':
        if torch.cuda.is_available():
            name = f'cuda:{local_rank}'
        else:
            name = 'mps' if torch.backends.mps.is_available() else 'cpu'
    elif name == 'cuda':
        name = f'cuda:{local_rank}'
    return torch.device(name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = configure(DEFAULTS, argv)
    ckpt = None
    if config['resume']:  # the run's own settings first, then whatever this command says
        ckpt = read_checkpoint(os.path.join(config['out_dir'], 'ckpt.pt'))
        config = configure({**DEFAULTS, **{k: v for k, v in ckpt['config'].items() if k in DEFAULTS}}, argv)
    c = SimpleNamespace(**config)

    # torchrun sets RANK/LOCAL_RANK/WORLD_SIZE; one process per GPU (or per CPU slot, with gloo)
    ddp = 'RANK' in os.environ
    rank, local_rank, world = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if ddp else (0, 0, 1)
    if c.grad_accum_steps % world:
        raise SystemExit(f"error: grad_accum_steps={c.grad_accum_steps} is not a multiple of the {world} processes")
    if c.dtype not in ('auto', 'bfloat16', 'float32'):
        raise SystemExit(f"error: dtype={c.dtype!r} is not one of auto|bfloat16|float32")
    if c.optimizer not in ('adamw', 'muon') or c.lr_schedule not in ('cosine', 'wsd'):
        raise SystemExit(f"error: optimizer={c.optimizer!r} / lr_schedule={c.lr_schedule!r}: choose "
                         f"optimizer adamw|muon and lr_schedule cosine|wsd")
    if c.optimizer == 'muon' and not c.lr > 0:
        raise SystemExit(f"error: optimizer='muon' scales muon_lr by the schedule's lr / lr, so lr={c.lr} must be > 0")
    if c.lr_schedule == 'wsd' and not 0 <= c.decay_frac <= 1:
        raise SystemExit(f"error: decay_frac={c.decay_frac} is a fraction of max_steps; pick a value in [0, 1]")
    if c.time_schedule and not c.max_time > 0:
        raise SystemExit(f"error: time_schedule=True fits the lr schedule into max_time, so set --max_time "
                         f"(seconds), got {c.max_time}")
    if c.eval_iters == 0:
        raise SystemExit("error: eval_iters=0 evaluates nothing; use a number of batches, or -1 for the whole file")
    dev = pick_device(c.device, local_rank)
    if ddp:
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo')
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    accum = c.grad_accum_steps // world  # micro-batches per process per step
    tokens_per_step = c.batch_size * c.context_length * c.grad_accum_steps
    max_steps = c.max_steps or math.ceil(c.total_tokens / tokens_per_step)
    dtype = torch.bfloat16 if c.dtype == 'bfloat16' or (c.dtype == 'auto' and dev.type == 'cuda') else torch.float32
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    if dev.type == 'cuda':  # TF32 matmuls on CUDA; never on MPS (handout note: wrong results there)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    log('config: ' + ', '.join(f'{k}={v!r}' for k, v in config.items()))

    train_tokens = open_tokens(c.train_data, c.vocab_size, c.tokenizer_dir, c.context_length)
    val_tokens = open_tokens(c.val_data, c.vocab_size, c.tokenizer_dir, c.context_length)
    if not has_tokenizer(c.tokenizer_dir):
        log(f"warning: no tokenizer in {c.tokenizer_dir} (data not checked against it); sample.py will need one")
    # validation windows: a fixed seeded set (same at every eval), or the whole file in consecutive windows
    if c.eval_iters < 0:
        val_starts = list(range(0, len(val_tokens) - c.context_length, c.context_length))
    else:
        g = torch.Generator().manual_seed(c.seed + 1)
        val_starts = torch.randint(len(val_tokens) - c.context_length, (c.eval_iters * c.batch_size,), generator=g).tolist()

    torch.manual_seed(c.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    data_rng = torch.Generator().manual_seed(c.seed)  # the data stream; its state goes into checkpoints
    model_config = ModelConfig(**{f.name: config[f.name] for f in dataclasses.fields(ModelConfig) if f.name in config})
    raw_model = TransformerLM(model_config).to(dev)
    if c.optimizer == 'muon':  # one optimizer: Muon groups first, then AdamW's (lr, betas, eps from here)
        groups = raw_model.param_groups(c.weight_decay, muon=True)
        groups[0].update(lr=c.muon_lr, weight_decay=c.muon_weight_decay)
        optimizer = Muon(groups, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, foreach=c.foreach)
    else:
        optimizer = AdamW(raw_model.param_groups(c.weight_decay), lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                          foreach=c.foreach)
    step, tokens, elapsed_before = 0, 0, 0.0
    if ckpt is not None:
        try:
            raw_model.load_state_dict(ckpt['model'])
            optimizer.load_state_dict(ckpt['optimizer'])
        except (RuntimeError, ValueError, KeyError) as e:
            raise SystemExit(f"error: checkpoint does not fit this model config ({str(e).splitlines()[0]}); "
                             f"resume with the run's own model settings")
        set_rng_state(ckpt['rng'], data_rng)
        step, tokens, elapsed_before = ckpt['iteration'], ckpt.get('tokens', 0), ckpt.get('time', 0.0)
        log(f"resumed from {c.out_dir}/ckpt.pt at step {step}")
        del ckpt  # frees the CPU copy of the weights
    model = torch.compile(raw_model, backend='aot_eager' if dev.type == 'mps' else 'inductor') if c.compile else raw_model
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == 'cuda' else None)
    n_params = raw_model.num_params()
    log(f"model: {n_params / 1e6:.2f}M parameters ({raw_model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding)"
        f" | {world} process(es) on {dev} | {tokens_per_step:,} tokens/step | {max_steps} steps")

    wandb = None
    if c.wandb_log and master:
        import wandb  # optional dependency, imported only when asked for
        wandb.init(project=c.wandb_project, name=c.wandb_run_name, config=config)
    os.makedirs(c.out_dir, exist_ok=True)
    ckpt_path, log_path = os.path.join(c.out_dir, 'ckpt.pt'), os.path.join(c.out_dir, 'log.jsonl')

    def record(row):  # one JSON object per log/eval line (the handout's experiment log)
        if master:
            with open(log_path, 'a') as f:
                f.write(json.dumps(row) + '\n')
            if wandb:
                wandb.log(row, step=row['step'])

    def stop_nonfinite(where):  # keeps ckpt.pt: it is only ever written after these checks
        kept = f"{ckpt_path} is the last good checkpoint" if os.path.exists(ckpt_path) else "no checkpoint written"
        raise SystemExit(f"error: non-finite {where} ({kept}); lower --lr, or pass --skip_nonfinite=True to skip "
                         f"steps with a non-finite gradient")

    def run_eval():
        val_loss = evaluate(model if not ddp else model.module, val_tokens, val_starts, c.batch_size,
                            c.context_length, dev, autocast, rank, world)
        if not math.isfinite(val_loss):
            stop_nonfinite(f"validation loss at step {step}")
        log(f"eval step {step}: val loss {val_loss:.4f} | ppl {math.exp(val_loss):.2f}")
        return val_loss

    if step >= max_steps:
        log(f"nothing to do: step {step} >= max_steps {max_steps}")
    t_start = time.time() - elapsed_before
    if step == 0 and c.eval_interval > 0:  # the curve starts at the untrained loss (~ ln vocab_size)
        record({'step': 0, 'tokens': 0, 'time': 0.0, 'val_loss': run_eval()})
    interval = torch.zeros(2, device=dev)  # sums since the last log line: (train loss, grad norm)
    n_interval, skipped, t_log = 0, 0, time.time()
    last_val = None  # the last validation loss, for the summary line
    bad_step = torch.tensor(-1, device=dev)  # first step with a non-finite grad norm; read at log steps only

    def time_used():  # the fraction of max_time spent; read on the host, so the device is not waited for
        used = (time.time() - t_start) / c.max_time
        if ddp:  # rank 0's clock decides, or the processes could disagree on the lr and on stopping (and hang)
            t = torch.tensor(used, device=dev)
            dist.broadcast(t, src=0)
            used = t.item()
        return used

    used = time_used() if c.time_schedule else 0.0  # the fraction of max_time spent (resumes included)
    while step < max_steps:
        horizon = max_steps  # the step at which the schedule ends
        if c.time_schedule and step > 0:  # as many steps as max_time allows at the pace so far, re-fit every step
            horizon = min(max_steps, max(step + 1, round(step / used)))
        if c.lr_schedule == 'wsd':  # the flat part ends decay_frac of the way before the end
            lr = wsd_lr(step, c.lr, c.min_lr, c.warmup_steps, horizon - round(c.decay_frac * horizon), horizon)
        else:
            lr = cosine_lr(step, c.lr, c.min_lr, c.warmup_steps, c.cosine_steps or horizon)
        for group in optimizer.param_groups:  # Muon's matrices follow the same curve, scaled to muon_lr
            group['lr'] = lr * (c.muon_lr / c.lr) if group.get('use_muon') else lr
        loss_accum = torch.zeros((), device=dev)
        for micro in range(accum):
            x, y = get_batch(train_tokens, c.batch_size, c.context_length, dev, data_rng, rank, world)
            # subtle: DDP all-reduces gradients on every backward unless told not to; only the last counts
            sync = nullcontext() if (not ddp or micro == accum - 1) else model.no_sync()
            with sync, autocast:
                _, loss = model(x, y)
                loss = loss / accum  # the mean over micro-batches; DDP averages over processes
            loss.backward()
            loss_accum += loss.detach()
        grad_norm = clip_grad_norm(raw_model.parameters(), c.grad_clip if c.grad_clip > 0 else math.inf)
        if c.skip_nonfinite and not torch.isfinite(grad_norm):  # the grad norm is the same on every rank
            skipped += 1
            log(f"step {step + 1}: non-finite gradient norm, step skipped ({skipped} so far)")
        else:
            optimizer.step()
            interval += torch.stack([loss_accum, grad_norm.to(dev)])
            n_interval += 1
            bad_step = torch.where(torch.isfinite(grad_norm) | (bad_step >= 0), bad_step, step + 1)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += tokens_per_step

        if c.time_schedule:
            used = time_used()
        last = step == max_steps or used >= 1
        evaluating = last or (c.eval_interval > 0 and step % c.eval_interval == 0)
        if not (step % c.log_interval == 0 or evaluating or last):
            continue
        # --- log step: the only place (with eval) where the host waits for the device
        if ddp:  # the loss over all processes
            dist.all_reduce(interval)
            interval /= world
        train_loss, norm = (interval / max(n_interval, 1)).tolist()
        elapsed = time.time() - t_start
        if c.max_time > 0:  # without time_schedule, the clock is read only here
            used = time_used()
        out_of_time = used >= 1
        first_bad = int(bad_step)
        if first_bad >= 0:
            stop_nonfinite(f"gradient at step {first_bad}")
        if not math.isfinite(train_loss):
            stop_nonfinite(f"training loss in steps {step - n_interval - skipped + 1}..{step}")
        dt = (time.time() - t_log) / max(n_interval + skipped, 1)  # seconds per step over this interval
        tok_s = tokens_per_step / dt
        mfu = f" | mfu {100 * raw_model.flops_per_token() * tok_s / (c.peak_flops * world):.1f}%" if dev.type == 'cuda' else ''
        eta = (horizon - step) * dt
        log(f"step {step}/{horizon} | loss {train_loss:.4f} | lr {lr:.2e} | norm {norm:.3f} | {tok_s:,.0f} tok/s"
            f"{mfu} | eta {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s")
        row = {'step': step, 'tokens': tokens, 'time': round(elapsed, 3), 'train_loss': train_loss, 'lr': lr,
               'grad_norm': norm}
        if out_of_time:
            log(f"max_time={c.max_time}s reached at step {step}: final eval and checkpoint")
        if evaluating or out_of_time:
            row['val_loss'] = last_val = run_eval()
            if master:
                save_checkpoint(raw_model, optimizer, step, ckpt_path, model_config=dataclasses.asdict(model_config),
                                config=config, rng=rng_state(data_rng), tokens=tokens, time=time.time() - t_start,
                                val_loss=row['val_loss'])
        record(row)
        interval.zero_()
        n_interval, skipped, t_log = 0, 0, time.time()
        if out_of_time or last:
            break
    if last_val is not None:  # the leaderboard's numbers, on the last line
        log(f"final: val loss {last_val:.4f} | {time.time() - t_start:.1f} s wall-clock | {tokens:,} tokens")
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
