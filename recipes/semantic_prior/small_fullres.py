# semantic_prior/small with the generator warping at the image's own resolution (no down-sampling blocks in the
# FOMM encoder / decoder: 64 px features instead of 16 px), so that a model trained for 45 CPU-minutes renders frames
# sharp enough for MediaPipe to find the face in them.  Everything else (keypoints, dense motion, losses, the
# prior's alignment, geometry loss and control) is semantic_prior/small's.
# * Why: semantic_prior/small's generated frames are too blurry for MediaPipe after 90 CPU-minutes (it warps at
#   16 px, 1/4 of the image as FOMM does at 256 px, and its decoder has to redraw every eye and mouth from there);
#   the control's effect could then be read on the warped source only.  A 12-CPU-minute pilot: MediaPipe found the
#   face in 25 of 32 held-out generated frames with this recipe, 7 with one down-sampling block, 0 with
#   semantic_prior/small (held-out L1 0.029 / 0.031 / 0.034).  Trained 45 CPU-minutes: a requested yaw turns the
#   generated head as a true rotation by that angle reads by MediaPipe (within 0.8-3.4 degrees);
#   docs/methods/semantic_prior.md "The generated frame".
# * Assumption (not FOMM's): features warped at full resolution; the decoder is its 4 residual blocks at
#   block_expansion channels (16) and the output convolution.  Use semantic_prior/small for FOMM's generator.
_base_ = ['./small.py']

model = dict(
    encoder=dict(num_down_blocks=0),
    decoder=dict(num_down_blocks=0),
)
