# The leaderboard recipe (config/leaderboard_owt.py) at CPU scale: stack it on config/exp_base.py, so the model
# size, data, budget (250 steps) and evaluation are exactly the baseline's and only the recipe's switches differ.
#   $ python train.py config/exp_base.py config/leaderboard_cpu.py            # the recipe
#   $ python experiments.py --only=leaderboard                                  # baseline vs each switch vs recipe
#   $ python experiments.py --only=budget                                       # the same, 150 s of wall-clock each
out_dir = 'out/exp/leaderboard/recipe'
ffn = 'relu2'  # d_ff = 4 * 128 = 512: the same parameter count as exp_base's swiglu 320
qk_norm = True
zero_init_proj = True
logit_softcap = 30.0
optimizer = 'muon'  # Muon (lr muon_lr) on the blocks' matrices, AdamW (lr) on embeddings, lm_head and gains
muon_lr = 0.02
min_lr = 0.0  # the WSD decay goes all the way down
lr_schedule = 'wsd'
decay_frac = 0.3
weight_decay = 0.0
