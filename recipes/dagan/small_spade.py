# DaGAN's SPADE variant at dagan/small's widths for CPU training and tests: the SPADE decoder shrunk to a 64-channel
# input (the small compensator's width), a 4-channel compressed label, 16 output features and 32-wide SPADE convs
# (official 256/4/64/128), still three middle blocks.  `thkit train dagan/small_spade` trains on thkit's synthetic
# talking heads with dagan/small's losses.
_base_ = ['./small.py']

model = dict(
    decoder=dict(_delete_=True, type='SPADEDecoder', in_channels=64, label_channels=4, out_features=16,
                 hidden_channels=32, num_middle_blocks=3, out_channels=3, spectral_norm=True, norm='instance',
                 align_corners=_base_.align_corners),
)
