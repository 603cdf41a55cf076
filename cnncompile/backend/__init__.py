"""Keras backend: ModelSpec -> keras.Model. Imports TensorFlow; never imported by `check`."""
