# The base run of experiments.py (handout section 7 at CPU scale): the tiny_cpu model with d_ff derived from the
# ffn switch (parameter-matched ablations), 250 steps x 32 x 128 = 1.0M tokens of the ../shared/data TinyStories
# sample, validation on the whole held-out file (the same tokens for every run).
out_dir = 'out/exp/base/base'
train_data = 'data/tiny_train.bin'
val_data = 'data/tiny_valid.bin'
tokenizer_dir = 'out/tok2k'
vocab_size = 2048
context_length = 128
d_model = 128
num_layers = 4
num_heads = 4
d_ff = None  # swiglu: 8/3 * 128 -> 320; silu/relu/gelu: 4 * 128 = 512 (same parameter count)
batch_size = 32
max_steps = 250
lr = 3e-3
min_lr = 3e-4
warmup_steps = 25
eval_interval = 50
eval_iters = -1  # the whole validation file (~110k tokens)
log_interval = 10
device = 'cpu'
compile = False
