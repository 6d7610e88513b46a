# SMAC's schedule (options/train.yml): Adam lr 8e-5, betas (0.9, 0.99), no weight decay, for the generator side
# (SMAC's net_g and motion estimator have separate Adams with the same settings: the same as one over both) and
# for the discriminator (which starts at iteration 5001: HingeGANLoss start_iter in the recipe); 250k iterations,
# x0.5 at 200k and 225k; batch 16 in total (4 GPUs x 4).  The EMA (0.995) of net_g: a GeneratorEMAHook in
# smac/vox256.py.
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=250_000, val_interval=10_000)
val_cfg = dict(type='ValLoop')

optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    generator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=8e-5, betas=(0.9, 0.99))),
    discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=8e-5, betas=(0.9, 0.99))),
)
param_scheduler = [dict(type='MultiStepLR', by_epoch=False, milestones=[200_000, 225_000], gamma=0.5)]
