# FOMM's vox-256 schedule (config/vox-256.yaml): Adam lr 2e-4, betas (0.5, 0.999) for the generator side
# (keypoint detector + generator: FOMM has one Adam each with the same settings, which is the same as one Adam
# over both) and for the discriminator; MultiStepLR gamma 0.1 at epochs 60 and 90 of 100; checkpoint every 50
# epochs.  FOMM counts epochs of num_repeats x (training persons, with id_sampling) items in batches of 40:
# 75 x 424 / 40 = 795 iterations (VoxCeleb1 as FOMM's preprocessing has 424 training identities).
train_identities = 424
num_repeats = 75
fomm_batch_size = 40
iters_per_epoch = train_identities * num_repeats // fomm_batch_size

train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=100 * iters_per_epoch, val_interval=5 * iters_per_epoch)
val_cfg = dict(type='ValLoop')

optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    generator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999))),
    discriminator=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999))),
)
# one list: applied to every optimiser
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[60 * iters_per_epoch, 90 * iters_per_epoch], gamma=0.1),
]
