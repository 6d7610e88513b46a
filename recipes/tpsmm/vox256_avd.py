# TPSMM's second training stage, "animation via disentanglement" (paper sec. 3.4; run.py --mode train_avd,
# train_avd.py, config/vox-256.yaml train_avd_params): only the AVD network trains, on the keypoints of a trained,
# frozen TPSMM (recipes/tpsmm/vox256.py).  Give the trained model:
#     thkit train tpsmm/vox256_avd --cfg-options trainer.generator_weights=work_dirs/tpsmm_vox256/weights.pth
# (or an official checkpoint, e.g. vox.pth.tar).  Each step: keypoints of source and driving (no gradient), the
# driving ones scaled per sample by random x/y factors in [0.75, 1.25], AVD(kp_source, scaled) must give back the
# driving keypoints (L1, lambda_shift 1).  The result (work_dir/weights.pth) holds the model and the AVD network:
#     thkit animate --recipe tpsmm/vox256 --checkpoint work_dirs/tpsmm_vox256_avd/weights.pth --mode avd ...
_base_ = ['./vox256.py']

trainer = dict(type='KeypointTransferTrainer', network={{_base_.avd_network}}, network_kind='motion',
               network_name='avd_network', generator_weights=None, random_scale=0.25)

losses = dict(_delete_=True, rec_kp=dict(type='KeypointReconstructionLoss', weight=1.0))  # lambda_shift 1

# 200 epochs x num_repeats 300 x 424 identities / batch 256; Adam lr 1e-3, betas (0.5, 0.999), no weight decay,
# no clipping; MultiStepLR gamma 0.1 at epochs 140 and 180.
avd_num_repeats = 300
avd_batch_size = 256
avd_iters_per_epoch = 424 * avd_num_repeats // avd_batch_size
train_dataloader = dict(batch_size=avd_batch_size, num_workers=24,
                        dataset=dict(num_repeats=avd_num_repeats))
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=200 * avd_iters_per_epoch,
                 val_interval=10 * avd_iters_per_epoch)
optim_wrapper = dict(
    _delete_=True,
    constructor='MultiOptimWrapperConstructor',
    network=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, betas=(0.5, 0.999))),
)
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[140 * avd_iters_per_epoch, 180 * avd_iters_per_epoch],
         gamma=0.1),
]
custom_hooks = [
    dict(type='ProgressBarHook'),
    dict(type='TrainRecordsHook'),
    dict(type='ExportKeypointTransferHook'),
]
default_hooks = dict(checkpoint=dict(interval=50 * avd_iters_per_epoch))  # checkpoint_freq 50
