# FOMM at small widths with this plugin's BicubicBorderWarper and ResidualRefineCompensator (a plugin recipe).
# A plugin's recipes are found through its `thkit.recipes` entry point: `thkit build example/fomm_bicubic`.
image_size = 64
num_kp = 10

model = dict(
    type='TalkingHeadModel',
    keypoint_detector=dict(type='FOMMKeypointDetector', num_kp=num_kp, block_expansion=8, max_features=64,
                           num_blocks=3, scale_factor=0.25, temperature=0.1),
    motion=dict(type='FirstOrderMotion', num_kp=num_kp, block_expansion=8, max_features=64, num_blocks=3,
                scale_factor=0.25),
    encoder=dict(type='FOMMEncoder', block_expansion=8, max_features=64, num_down_blocks=2, out_indices=(-1, )),
    warper=dict(type='BicubicBorderWarper'),
    compensator=dict(type='ResidualRefineCompensator', channels=[32]),  # the encoder's one warped map: 32 wide
    decoder=dict(type='FOMMDecoder', block_expansion=8, max_features=64, num_down_blocks=2,
                 num_bottleneck_blocks=2),
)
motion_transfer = dict(relative=True, relative_jacobian=True, adapt_movement_scale=False)
