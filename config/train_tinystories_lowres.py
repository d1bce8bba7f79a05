# The handout's low-resource TinyStories run for a CPU or Apple-silicon (MPS) laptop: the handout model
# (train.py's defaults: vocab 10000, context 256, d_model 512, d_ff 1344, 4 layers, 16 heads), trained on
# 40,000,000 tokens (about 4,900 steps of 32 x 256); target val loss <= 2.00 instead of 1.45.
#   $ python train.py config/train_tinystories_lowres.py                  # device 'auto': mps if present, else cpu
#   $ python train.py config/train_tinystories_lowres.py --device=cpu --max_steps=50   # smoke test
out_dir = 'out/tinystories_lowres'
train_data = 'data/ts_train.bin'
val_data = 'data/ts_valid.bin'
tokenizer_dir = 'out/tokenizer'
batch_size = 32  # 8,192 tokens per step
lr = 2e-3  # fewer steps than the full run: a somewhat larger peak lr
min_lr = 2e-4
warmup_steps = 200
total_tokens = 40_000_000  # -> max_steps = 4,883
eval_interval = 250
eval_iters = 20  # 20 x 32 windows = 164k tokens
log_interval = 10
device = 'auto'  # float32 on MPS and CPU (dtype='auto'); TF32 is never enabled on MPS
compile = False  # True uses the 'aot_eager' backend on MPS (handout tip); on CPU it needs a C++ compiler
