"""keras_iresnet.layers.heads: the classifier head, BatchNormalization -> ReLU -> global average
pooling -> Dense, against the same computation in numpy from its weights."""

import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir


def _numpy_head(head, x):
    norm = head.norm
    h = (x - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    h = np.maximum(h * norm.gamma.numpy() + norm.beta.numpy(), 0.0)
    if h.ndim == 4:
        h = h.mean(axis=(1, 2))
    return h @ head.logits.kernel.numpy() + head.logits.bias.numpy()


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (2, 7)])
def test_classifier_head_is_norm_relu_pool_dense(shape):
    head = kir.ClassifierHead(5)
    x = tf.random.stateless_normal(shape, seed=[18, 3])
    head(x, training=True)  # moves the batch-norm statistics away from (0, 1)
    logits = head(x).numpy()
    assert logits.shape == (2, 5)
    assert not np.allclose(head.norm.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(logits, _numpy_head(head, x.numpy()), rtol=1e-5, atol=1e-5)


def test_classifier_head_errors():
    with pytest.raises(ValueError, match="num_classes"):
        kir.ClassifierHead(1)
    with pytest.raises(ValueError, match="momentum"):
        kir.ClassifierHead(3, momentum=1.0)
