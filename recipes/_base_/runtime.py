# thkit training runtime (mmengine Runner) shared by every trainable recipe: hooks, logging, visualisation, seed.
# `thkit train` adds the rest: the training model (generator + discriminator + losses), DDP on CPU or GPU, and
# the resolved recipe in WORK_DIR/recipe.py.  Intervals are in iterations.
default_scope = 'thkit'
seed = 0
deterministic = False
log_level = 'INFO'

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # gloo is chosen automatically on the CPU
)
log_processor = dict(by_epoch=False, window_size=20)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # atomic writes, crash-safe rotation, random-generator states for an exact --resume
    checkpoint=dict(type='AtomicCheckpointHook', interval=5000, by_epoch=False, max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [
    dict(type='ProgressBarHook'),  # tqdm bar with ETA, it/s and losses (on a terminal)
    dict(type='SampleGridHook', interval=1000, num_samples=4),  # WORK_DIR/samples/iter_N.png
    dict(type='TrainRecordsHook'),  # WORK_DIR/records/train.jsonl, val.jsonl, loss_curves.png
    dict(type='ExportWeightsHook'),  # WORK_DIR/weights.pth (thkit checkpoint of the generator) at the end
]
# scalars.json + images under WORK_DIR/<timestamp>/vis_data; TensorBoard events when tensorboard is installed
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
