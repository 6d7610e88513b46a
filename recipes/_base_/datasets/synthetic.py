# thkit's synthetic talking heads (thkit.datasets.synthetic): written to synthetic_root the first time it is used, so
# training needs no download.  Pair augmentation as FOMM's VoxCeleb settings.  image_size / input_range come from
# the recipe.  The dataloaders are variables, so that a recipe built on a VoxCeleb recipe can swap its data:
#     _base_ = ['./vox256.py', '../_base_/datasets/synthetic.py']
#     train_dataloader = dict(_delete_=True, **_base_.synthetic_train_dataloader)
#     val_dataloader = dict(_delete_=True, **_base_.synthetic_val_dataloader)
synthetic_root = 'data/synth'
synthetic_train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    dataset=dict(
        type='SyntheticTalkingHeads', root=synthetic_root, mode='train', num_repeats=10,
        synth=dict(videos=100, frames=32, seed=0),
        augmentation=dict(type='PairAugmentation', flip_p=0.5, time_flip_p=0.5,
                          jitter=dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1))),
)
synthetic_val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(type='SyntheticTalkingHeads', root=synthetic_root, mode='reconstruction', num_videos=4, max_frames=16,
                 synth=dict(videos=100, frames=32, seed=0)),
)
