# The handout's OpenWebText run (section 7.4): the TinyStories model, budget and optimizer with a 32k
# vocabulary (the embedding and lm_head then hold 2 x 16.4M parameters). Keys not set here are train.py's
# defaults, which are the handout's model: context 256, d_model 512, d_ff 1344, 4 layers, 16 heads.
#   $ python tokenize_data.py --dataset owt                                    # download the text into data/
#   $ python bpe.py train --input data/owt_train.txt --vocab_size 32000 --special_tokens "<|endoftext|>" --out out/tokenizer_owt
#   $ python tokenize_data.py --dataset owt --tokenizer out/tokenizer_owt      # -> data/owt_{train,valid}.bin
#   $ python train.py config/train_owt.py
out_dir = 'out/owt'
train_data = 'data/owt_train.bin'
val_data = 'data/owt_valid.bin'
tokenizer_dir = 'out/tokenizer_owt'
vocab_size = 32000  # web text is harder than TinyStories: expect a val loss near 4, not 1.4
batch_size = 128  # 32,768 tokens per step; total_tokens 327,680,000 -> 10,000 steps
lr = 1e-3
warmup_steps = 500
log_interval = 20
compile = True
fused = True  # PyTorch's fused kernels (same math); False for ours
