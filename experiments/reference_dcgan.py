"""Fashion-MNIST with exactly the architecture, losses and optimizer of the PyTorch reference
(../shared/bench/torch_reference.py, the TensorFlow DCGAN tutorial's model), for like-for-like
speed and quality comparisons:

G: Dense(7*7*256, no bias) > BN > LReLU > ConvT(128, 5, s1) > BN > LReLU > ConvT(64, 5, s2) > BN
   > LReLU > ConvT(1, 5, s2) > tanh, no biases.
D: Conv(64, 5, s2) > LReLU > Dropout(0.3) > Conv(128, 5, s2) > LReLU > Dropout(0.3) > Dense(1).
BCE on logits, non-saturating G loss, Adam(2e-4, beta1=0.5), one D and one G update per step.
Only the initialisation differs: N(0, 0.02) (DCGAN paper) rather than PyTorch's defaults.
"""

from dcgan_jax.gan.config import default_config


def get_config():
    config = default_config()
    config.model.update(
        base_width=64,
        kernel_size=5,
        g_base_features=256,
        g_stride1_layers=1,
        g_activation="leaky_relu",
        g_output_bias=False,
        d_batch_norm=False,
        d_dropout=0.3,
    )
    return config
