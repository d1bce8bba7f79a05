# A CPU-sized run that learns the TinyStories sample in ../shared/data within minutes (2 cores).
# Make the data first (a few seconds), from the repo root:
#   $ python bpe.py train --input ../shared/data/tinystories_v2_sample.txt --vocab_size 2048 --special_tokens "<|endoftext|>" --out out/tok2k
#   $ python tokenize_data.py --tokenizer out/tok2k --input ../shared/data/tinystories_v2_sample.txt --output data/tiny_train.bin --val_docs 500 --val_output data/tiny_valid.bin
#   $ python train.py config/tiny_cpu.py
#   $ python sample.py --out_dir=out/tiny_cpu --device=cpu
out_dir = 'out/tiny_cpu'
train_data = 'data/tiny_train.bin'  # ~1.3M tokens
val_data = 'data/tiny_valid.bin'  # the last 500 stories, ~110k tokens
tokenizer_dir = 'out/tok2k'
# model: ~0.8M non-embedding parameters
vocab_size = 2048
context_length = 128
d_model = 128
num_layers = 4
num_heads = 4  # head dim 32
d_ff = 384  # 3 d_model, near the 8/3 ratio, a multiple of 64
# 4,096 tokens per step; 600 steps ~ 2.5M tokens ~ 2 passes over the sample
batch_size = 32
max_steps = 600
lr = 3e-3  # small models take a large lr
min_lr = 3e-4
warmup_steps = 50
eval_interval = 100
eval_iters = 10  # 10 batches = 41k validation tokens
log_interval = 10
device = 'cpu'
compile = False
