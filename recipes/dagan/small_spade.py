# DaGAN's SPADE variant at dagan/small's widths for CPU training and tests: the SPADE decoder shrunk to a 64-channel
# input (the small compensator's width), a 4-channel compressed label, 16 output features, 16-wide SPADE convs and
# one middle block (official 256/4/64/128, three middle blocks).  `thkit train dagan/small_spade` trains on thkit's
# synthetic talking heads with dagan/small's losses and its align_corners=True (the deformed source in SPADE's label
# map is then the source itself where nothing moves).  SPADE convs 32 -> 16 wide and three middle blocks -> one cut
# the model from 2.6 to 1.5 GFLOP per 64 px frame; benchmarks/learns.py (6 CPU minutes, 64 px): held-out L1 0.0489
# (align_corners False, 32 wide, 3 blocks), 0.0471 (True, 32, 3: 286 iterations), 0.0459 and 0.0474 in two runs
# (True, 16, 1: 389 / 428 iterations); copy-the-source 0.0462, so not yet reliably better than copying on L1.
_base_ = ['./small.py']

model = dict(
    decoder=dict(_delete_=True, type='SPADEDecoder', in_channels=64, label_channels=4, out_features=16,
                 hidden_channels=16, num_middle_blocks=1, out_channels=3, spectral_norm=True, norm='instance',
                 align_corners=_base_.align_corners),
)
