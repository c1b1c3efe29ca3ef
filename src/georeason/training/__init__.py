"""Training helpers of `georeason train`: the recipe, the data order, checkpoints and the loop.

Implements the training recipe of SPEC 3 (paper Table 8); see docs/train.md.
"""
