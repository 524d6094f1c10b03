"""keras_iresnet.layers.reshaping: Squeeze and FlattenEvent (permutations: zero log-det) and
InjectivePad (injective: the volume change onto its image)."""

import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir
from keras_iresnet.testing import full_jacobian_log_det


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 3])


@pytest.mark.parametrize(
    "layer,shape",
    [
        (kir.Squeeze(), (2, 4, 4, 2)),
        (kir.Squeeze(factor=3), (1, 3, 6, 1)),
        (kir.FlattenEvent(), (2, 2, 3, 2)),
    ],
)
def test_permutation_layers_have_zero_log_det(layer, shape):
    x = random(shape, 15)
    y, log_det = layer.forward_and_log_det(x)
    np.testing.assert_array_equal(log_det.numpy(), np.zeros(shape[0]))
    np.testing.assert_allclose(full_jacobian_log_det(layer, x), 0.0, atol=1e-6)
    np.testing.assert_array_equal(layer.inverse(y).numpy(), x.numpy())
    np.testing.assert_array_equal(np.sort(y.numpy().ravel()), np.sort(x.numpy().ravel()))


def test_squeeze_moves_each_block_of_pixels_into_channels():
    """Squeeze(2): the 2x2 block at (i, j) becomes the channels of output pixel (i, j)."""
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    y = kir.Squeeze()(x).numpy()
    assert y.shape == (2, 2, 2, 12)
    for i in range(2):
        for j in range(2):
            block = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, :]
            np.testing.assert_array_equal(
                np.sort(y[:, i, j], axis=-1), np.sort(block.reshape(2, -1))
            )


def test_squeeze_and_flatten_errors():
    with pytest.raises(ValueError, match="divisible"):
        kir.Squeeze()(tf.zeros([1, 5, 4, 1]))
    with pytest.raises(ValueError, match="factor"):
        kir.Squeeze(factor=1)
    with pytest.raises(ValueError, match="image inputs"):
        kir.Squeeze()(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="must be built"):
        kir.FlattenEvent().inverse(tf.zeros([1, 4]))


def test_injective_pad_is_injective_with_zero_log_volume():
    layer = kir.InjectivePad(2)
    x = random([2, 3, 3, 1], 16)
    y, log_det = layer.forward_and_log_det(x)
    assert y.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(y[..., 1:].numpy(), 0.0)
    np.testing.assert_array_equal(layer.inverse(y).numpy(), x.numpy())
    # The inverse drops the padded channels whatever they hold (a left inverse).
    np.testing.assert_array_equal(
        layer.inverse(y + tf.pad(tf.ones([2, 3, 3, 2]), [[0, 0]] * 3 + [[1, 0]])).numpy(), x.numpy()
    )
    # log sqrt(det(J^T J)) of the (non-square) Jacobian: the volume change onto the image.
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
    jac = tf.reshape(tape.batch_jacobian(out, x), [2, 27, 9]).numpy()
    gram = np.swapaxes(jac, 1, 2) @ jac
    assert np.linalg.matrix_rank(gram[0]) == 9  # injective: full column rank
    np.testing.assert_allclose(log_det.numpy(), 0.5 * np.linalg.slogdet(gram)[1], atol=1e-6)
    with pytest.raises(ValueError, match="pad"):
        kir.InjectivePad(0)
