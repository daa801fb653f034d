"""Galaxy GAN Studio: train, explore and evaluate GANs on galaxy images."""

__version__ = "0.1.0"
