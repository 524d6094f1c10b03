"""keras_iresnet.layers.invertible: the contract a user's own invertible layer gets (Keras
serialization inside a chain, inverse settings on closed-form layers) and stacked parameters."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iresnet as kir


def random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 3])


@keras.saving.register_keras_serializable(package="my_tests")
class ElementwiseAffine(kir.InvertibleLayer):
    """A user's invertible layer: ``y = x * exp(s) + b`` with its own weights, per dimension."""

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=0.5, seed=1),
        )
        self.shift = self.add_weight(
            name="shift", shape=shape, initializer=keras.initializers.RandomNormal(seed=2)
        )

    def forward_and_log_det(self, inputs, training=None, logdet=None):
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x.shape)
        log_scale = tf.convert_to_tensor(self.log_scale)
        y = x * tf.exp(log_scale) + self.shift
        return y, tf.reduce_sum(log_scale) * tf.ones(tf.shape(x)[:1], x.dtype)

    def _inverse(self, y, settings):
        return (y - self.shift) * tf.exp(-tf.convert_to_tensor(self.log_scale))


def test_user_defined_layer_survives_keras_save_and_load(tmp_path):
    inputs = keras.Input((3,))
    affine = ElementwiseAffine()
    block = kir.InvertibleResidualBlock(hidden=4, coeff=0.9)
    flow = kir.InvertibleSequential([affine, block])
    model = keras.Model(inputs, flow(inputs))
    x = random([4, 3], 5)
    y, log_det = flow.forward_and_log_det(x)
    path = tmp_path / "user_layer.keras"
    model.save(path)
    loaded = keras.models.load_model(path).layers[-1]
    assert type(loaded.chain[0]) is ElementwiseAffine
    np.testing.assert_array_equal(loaded.chain[0].log_scale.numpy(), affine.log_scale.numpy())
    y_loaded, log_det_loaded = loaded.forward_and_log_det(x)
    np.testing.assert_allclose(y_loaded.numpy(), y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(log_det_loaded.numpy(), log_det.numpy(), rtol=1e-6)
    np.testing.assert_allclose(loaded.inverse(y, strict=True).numpy(), x.numpy(), atol=1e-5)


def test_closed_form_layers_accept_and_validate_inverse_settings():
    layer = kir.ActNorm()
    y = random([2, 3], 20)
    np.testing.assert_array_equal(
        layer.inverse(y, solver="anderson", rtol=1e-3, strict=True).numpy(), y.numpy()
    )
    x, info = layer.inverse(y, return_info=True)
    assert info is None
    np.testing.assert_array_equal(x.numpy(), y.numpy())  # uninitialized ActNorm: the identity
    with pytest.raises(TypeError, match="unexpected inverse settings"):
        layer.inverse(y, tolerance=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        layer.inverse(y, rtol=-1.0)


def test_a_built_layer_names_the_shape_it_takes():
    layer = ElementwiseAffine(name="affine")
    layer.build((None, 3))
    with pytest.raises(
        ValueError, match=r"ElementwiseAffine 'affine' takes inputs of shape \[batch, 3\]"
    ):
        layer.forward_and_log_det(tf.zeros([2, 4]))
    with pytest.raises(ValueError, match=r"takes inverse inputs .* of shape \[batch, 3\]"):
        layer.inverse(tf.zeros([2, 5]))
