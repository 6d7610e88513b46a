# FOMM vox-adv-256 (config/vox-adv-256.yaml): vox-256 plus an LSGAN with discriminator feature matching.  The
# discriminator sees the driving keypoints (use_kp) and has no spectral norm; 150 epochs of batch 36, no learning
# rate decay.
_base_ = ['./vox256.py']

discriminator = dict(sn=False, use_kp=True)

losses = dict(adversarial=dict(weight=1.0, discriminator_weight=1.0, feature_matching=[10.0] * 4))

adv_iters_per_epoch = 424 * 75 // 36
train_dataloader = dict(batch_size=36)
train_cfg = dict(max_iters=150 * adv_iters_per_epoch, val_interval=5 * adv_iters_per_epoch)
param_scheduler = []
