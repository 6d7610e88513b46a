# A mix no paper has: TPSMM (thin-plate-spline motion, multi-resolution occlusion, its inpainting decoder) with
# DaGAN's depth-aware cross-modal attention on the coarsest warped feature.  TPSMM's keypoints know nothing of
# depth, so the attention runs its own self-supervised depth network (DaGAN's ResNet-18 Monodepth2 net, frozen; its
# weights: compensator.depth.weights = the folder with DaGAN's encoder.pth and depth.pth) on the source and takes
# its queries from that depth map, its keys and values from the warped TPSMM feature (stride 8, 512 channels).
# Parts: TPSKeypointDetector, ThinPlateSplineMotion, TPSMMEncoder / TPSMMDecoder (recipes/tpsmm/vox256.py),
# DepthAwareAttention + MonodepthDepthNet (recipes/dagan/vox256.py).
_base_ = ['../tpsmm/vox256.py']

model = dict(
    compensator=dict(
        _delete_=True, type='DepthAwareAttention', channels=512, block_expansion=64, max_features=512,
        num_down_blocks=3,
        depth=dict(type='MonodepthDepthNet', num_layers=18, weights=None)),
)
