# VoxCeleb in the FOMM layout (root/train, root/test: one folder of frames or one video per clip), as FOMM's
# config/vox-256.yaml: id sampling (one person per item, then one of its clips), 75 repeats per epoch, horizontal
# and time flips and colour jitter 0.1 on both frames of a pair, batch 40.  Validation: FOMM's reconstruction
# protocol (frame 0 is the source of every frame) on a few test videos.  image_size / input_range come from the
# recipe.
data_root = 'data/vox'
train_dataloader = dict(
    batch_size=40,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    dataset=dict(
        type='FramesDataset', root=data_root, mode='train', id_sampling=True, num_repeats=75,
        augmentation=dict(type='PairAugmentation', flip_p=0.5, time_flip_p=0.5,
                          jitter=dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1))),
)
val_dataloader = dict(
    batch_size=16,
    num_workers=4,
    dataset=dict(type='FramesDataset', root=data_root, mode='reconstruction', num_videos=16, max_frames=64),
)
val_evaluator = [dict(type='L1'), dict(type='PSNR')]
