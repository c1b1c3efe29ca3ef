"""Training helpers of `georeason train`: the recipe, the data order, checkpoints and the loop.

Implements the training recipe of docs/released_code.md#training-recipe (paper Table 8); see docs/train.md.
"""
