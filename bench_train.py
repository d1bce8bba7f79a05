"""Training-step speed of model.py (+ optim.py's AdamW) side by side with an equivalent torch.nn model.

    $ python bench_train.py                                   # CPU: small + handout TinyStories config
    $ python bench_train.py --sizes=tinystories --steps=11    # more timed steps, one size
    $ python bench_train.py --device=cuda --peak_flops=989e12 # GPU: torch.compile + bf16 autocast, with MFU

One step = zero_grad, forward, backward, optimizer step. Every timed round runs one step of each model in
turn (so machine noise hits all of them alike) and we report the median over rounds. Rows:
  ours          from-scratch model.py (reference path) + optim.AdamW
  ours fused    model.py with fused=True + optim.AdamW (foreach=True on CUDA)
  torch.nn      nn.Linear/nn.Embedding/nn.RMSNorm + F.scaled_dot_product_attention + torch.optim.AdamW (the peer;
                fused=True on CUDA)
Targets (issue 4, CPU): ours <= 1.10x the torch.nn time, ours fused <= 1.0x. On a busy machine with few cores,
--threads=1 gives steadier ratios (two threads stall whenever either is descheduled).
"""
import inspect
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from configurator import configure
from model import ModelConfig, TransformerLM, flops_breakdown

# -----------------------------------------------------------------------------
device = 'auto'  # 'auto' (cuda if available, else cpu) | 'cpu' | 'cuda'
sizes = 'small,tinystories'  # comma-separated names from SIZES below
batch_size = 0  # sequences per step; 0 = the per-size default for the device (CPU: a step of roughly 1 s)
steps = 7  # timed rounds (one step of every model per round); the median is reported
warmup = 2  # untimed rounds first (allocator warm-up, torch.compile)
compile = None  # torch.compile every model; None = on for CUDA, off on CPU
autocast = None  # bf16 autocast; None = on for CUDA, off on CPU
peak_flops = 989e12  # device peak FLOP/s for MFU (H100 SXM dense bf16: 989e12; H200 the same)
threads = 0  # torch.set_num_threads; 0 = torch's default
seed = 0
# -----------------------------------------------------------------------------
_DEFAULTS = {k: v for k, v in globals().items()
             if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}

SIZES = {  # name -> (ModelConfig fields, default batch size on CPU, on CUDA)
    'small': (dict(vocab_size=2048, context_length=128, d_model=128, num_layers=2, num_heads=4, d_ff=384), 16, 256),
    'tinystories': (dict(vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344),
                    4, 128),
}


class TorchLM(nn.Module):
    """The handout's model (pre-norm, RoPE, SwiGLU, untied) from torch.nn layers: the peer we compare against."""

    def __init__(self, c):
        super().__init__()
        self.token_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(TorchBlock(c) for _ in range(c.num_layers))
        self.ln_final = nn.RMSNorm(c.d_model, eps=1e-5)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        D = c.d_model // c.num_heads
        angles = torch.arange(c.context_length)[:, None] * c.rope_theta ** (-torch.arange(0, D, 2) / D)  # (T, D/2)
        self.register_buffer('cos', angles.cos(), persistent=False)
        self.register_buffer('sin', angles.sin(), persistent=False)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.token_embeddings(idx)
        for layer in self.layers:
            x = layer(x, self.cos[:T], self.sin[:T])
        logits = self.lm_head(self.ln_final(x))
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


class TorchBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_heads = c.num_heads
        self.ln1, self.ln2 = nn.RMSNorm(c.d_model, eps=1e-5), nn.RMSNorm(c.d_model, eps=1e-5)
        self.q, self.k, self.v, self.o = (nn.Linear(c.d_model, c.d_model, bias=False) for _ in range(4))
        self.w1, self.w3 = nn.Linear(c.d_model, c.d_ff, bias=False), nn.Linear(c.d_model, c.d_ff, bias=False)
        self.w2 = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = self.ln1(x)
        q, k, v = (lin(h).view(B, T, self.num_heads, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
        h = self.ln2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rotate(x, cos, sin):
    """RoPE on pairs (0,1), (2,3), ... as in the handout (x (B, H, T, D), cos/sin (T, D/2))."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


def make_runs(cfg_fields, dev, use_compile, seed):
    """[(row name, model, optimizer)] for one size; all models start from the same seed."""
    try:
        from optim import AdamW  # from-scratch AdamW (optim.py, another file of this repo)
        ours_opt, note = AdamW, 'optim.AdamW'
    except ImportError:
        ours_opt, note = torch.optim.AdamW, 'torch AdamW: optim.py missing'
    # optim.AdamW's foreach variant saves kernel launches on a GPU; on a CPU its plain loop is faster
    foreach = {'foreach': True} if dev == 'cuda' and 'foreach' in inspect.signature(ours_opt).parameters else {}
    runs = []
    for name, build, opt, kw in [
        (f'ours ({note})', lambda: TransformerLM(ModelConfig(**cfg_fields)), ours_opt, {}),
        (f'ours fused ({note}{", foreach" if foreach else ""})',
         lambda: TransformerLM(ModelConfig(**cfg_fields, fused=True)), ours_opt, foreach),
        ('torch.nn (torch AdamW)', lambda: TorchLM(ModelConfig(**cfg_fields)), torch.optim.AdamW,
         {'fused': True} if dev == 'cuda' else {}),
    ]:
        torch.manual_seed(seed)
        model = build().to(dev)
        optimizer = opt(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)
        runs.append((name, torch.compile(model) if use_compile else model, optimizer))
    return runs


def cpu_name():
    """The processor's model name (Linux), else the architecture."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.machine()


def train_step(model, optimizer, x, y, use_autocast):
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_autocast):
        _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss


def main():
    config = configure(_DEFAULTS, sys.argv[1:])
    dev = config['device'] if config['device'] != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    on_cuda = dev == 'cuda'
    use_compile = on_cuda if config['compile'] is None else config['compile']
    use_autocast = on_cuda if config['autocast'] is None else config['autocast']
    if config['threads']:
        torch.set_num_threads(config['threads'])
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    machine = torch.cuda.get_device_name() if on_cuda else f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"bench_train on {machine}, torch {torch.__version__}, config {config}")
    if not on_cuda and hasattr(os, 'getloadavg') and os.getloadavg()[0] > 0.5 * os.cpu_count():
        print(f"note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other work is running, so "
              f"timings are noisy (--threads=1 gives steadier ratios)")
    for size in config['sizes'].split(','):
        if size not in SIZES:
            raise SystemExit(f"error: unknown size {size!r}; choose from {','.join(SIZES)}")
        fields, cpu_bs, cuda_bs = SIZES[size]
        B = config['batch_size'] or (cuda_bs if on_cuda else cpu_bs)
        T = fields['context_length']
        runs = make_runs(fields, dev, use_compile, config['seed'])
        g = torch.Generator().manual_seed(config['seed'])
        x, y = (torch.randint(0, fields['vocab_size'], (B, T), generator=g).to(dev) for _ in range(2))
        times = {name: [] for name, _, _ in runs}
        for r in range(config['warmup'] + config['steps']):
            for name, model, optimizer in runs:
                if on_cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                loss = train_step(model, optimizer, x, y, use_autocast)
                loss.item()  # waits for the GPU
                if r >= config['warmup']:
                    times[name].append(time.perf_counter() - t0)
        flops = 3 * sum(flops_breakdown(ModelConfig(**fields), T).values()) / T  # training FLOPs per token
        print(f"\n{size}: {fields}, batch {B}x{T} tokens, device {dev}, threads {torch.get_num_threads()}, "
              f"compile {use_compile}, bf16 autocast {use_autocast}, median of {config['steps']} steps")
        print(f"{'model':<48} {'ms/step':>9} {'tokens/s':>10} {'vs torch.nn':>12}" + (f" {'MFU':>6}" * on_cuda))
        peer = statistics.median(times[runs[-1][0]])
        for name, _, _ in runs:
            t = statistics.median(times[name])
            mfu = f" {B * T * flops / t / config['peak_flops']:6.1%}" if on_cuda else ''
            print(f"{name:<48} {t * 1e3:9.1f} {B * T / t:10,.0f} {t / peer:11.2f}x{mfu}")


if __name__ == "__main__":
    main()
