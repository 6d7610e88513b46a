# Cross-paper: MCNet's memory compensator (implicit identity code + meta-memory, Hong & Xu, ICCV 2023) inside FOMM's
# generator (fomm/small).  FOMM warps only its coarsest encoder feature (64 ch at 1/4 of the image); the compensator
# replaces the odd half of it by the memory read-out before FOMM's bottleneck and decoder, and MCNet's memory
# consistency loss trains the memory.  A study recipe: no published weights.
_base_ = ['../fomm/small.py']

model = dict(
    compensator=dict(_delete_=True, type='MemoryCompensator', in_channels=(64, ), levels=(-1, ), num_kp=_base_.num_kp,
                     mb_channel=64, mb_spatial=16, style_dim=128, style_hidden=64, noise='auto'),
)

losses = dict(memory_consistency=dict(type='MemoryConsistencyLoss', weight=10.0))
