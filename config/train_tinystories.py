# The handout's TinyStories run (section 7.2) on one GPU: 327,680,000 tokens = 10,000 steps x 128 x 256.
#   $ python tokenize_data.py --dataset tinystories                                 # download the text into data/
#   $ python bpe.py train --input data/TinyStoriesV2-GPT4-train.txt --vocab_size 10000 --special_tokens "<|endoftext|>" --out out/tokenizer
#   $ python tokenize_data.py --dataset tinystories --tokenizer out/tokenizer    # -> data/ts_{train,valid}.bin
#   $ python train.py config/train_tinystories.py
#   $ torchrun --standalone --nproc_per_node=8 train.py config/train_tinystories.py --batch_size=16 --grad_accum_steps=8
#     (the same 128 x 256-token steps, spread over 8 GPUs)
out_dir = 'out/tinystories'
train_data = 'data/ts_train.bin'
val_data = 'data/ts_valid.bin'
tokenizer_dir = 'out/tokenizer'
# model: the handout's ~17M non-embedding parameters
vocab_size = 10000
context_length = 256
d_model = 512
d_ff = 1344
num_layers = 4
num_heads = 16
rope_theta = 10000.0
# optimization: 128 x 256 = 32,768 tokens per step. lr 1e-3 with a 10x cosine decay is a safe start for the
# handout's lr sweep (try 3e-4 ... 3e-3); betas/decay/clipping are the usual LLM settings.
batch_size = 128
grad_accum_steps = 1  # micro-batches per step over ALL GPUs (a multiple of their number); see torchrun above
lr = 1e-3
min_lr = 1e-4
warmup_steps = 500  # 5% of the run
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
total_tokens = 327_680_000  # -> max_steps = 10,000
# evaluation: 20 x 128 fixed validation windows (655k tokens) every 500 steps
eval_interval = 500
eval_iters = 20
log_interval = 20
# speed: bf16 autocast (dtype='auto' on CUDA), compiled, fused kernels (same math; fused=False for ours)
compile = True
fused = True
