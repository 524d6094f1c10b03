"""keras_iresnet.layers.walk: the spectral layers and residual stacks inside a layer or model,
in creation order (what certify, refine and the models' tracking iterate over)."""

import keras_iresnet as kir
from keras_iresnet.layers import walk


def test_walks_find_layers_in_creation_order():
    stack = kir.InvertibleResidualStack(num_blocks=2, hidden=4, coeff=0.9, kernel_sizes=(3, 1))
    block = kir.InvertibleResidualBlock(hidden=4, coeff=None, kernel_sizes=(3, 1, 3))
    flow = kir.InvertibleSequential([kir.Squeeze(), stack, kir.ActNorm(), block])
    flow.build((None, 4, 4, 1))
    assert walk.residual_stacks(flow) == [stack, block]
    assert walk.spectral_layers(flow) == stack.linear_layers + block.linear_layers
    assert walk.spectral_layers(stack.linear_layers[0]) == [stack.linear_layers[0]]
    # Only the layers that normalize (the vanilla block's have coeff None).
    assert walk.normalized_layers(flow) == stack.linear_layers
    assert walk.residual_stacks(kir.ActNorm()) == [] and walk.spectral_layers(kir.ActNorm()) == []
