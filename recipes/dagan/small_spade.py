# DaGAN's SPADE variant at dagan/small's widths for CPU training and tests: the SPADE decoder shrunk to a 64-channel
# input (the small compensator's width), a 4-channel compressed label, 16 output features, 16-wide SPADE convs and
# one middle block (official 256/4/64/128, three middle blocks).  `thkit train dagan/small_spade` trains on thkit's
# synthetic talking heads with dagan/small's losses and its align_corners=True (the deformed source in SPADE's label
# map is then the source itself where nothing moves).  SPADE convs 32 -> 16 wide and three middle blocks -> one cut
# the model from 2.6 to 1.5 GFLOP per 64 px frame; benchmarks/learns.py (6 CPU minutes, 64 px, the step schedule
# compressed into the budget): held-out L1 0.0427, 0.0428, 0.0424 in three runs (copy-the-source 0.0462; at a
# constant learning rate 0.0489 with align_corners False, 32 wide, 3 blocks; 0.0459 and 0.0474 as committed).
_base_ = ['./small.py']

model = dict(
    decoder=dict(_delete_=True, type='SPADEDecoder', in_channels=64, label_channels=4, out_features=16,
                 hidden_channels=16, num_middle_blocks=1, out_channels=3, spectral_norm=True, norm='instance',
                 align_corners=_base_.align_corners),
)
