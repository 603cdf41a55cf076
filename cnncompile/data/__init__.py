"""Datasets: built-in MNIST/Fashion-MNIST resolution and download, IDX/npz/image-folder loaders.

numpy and Pillow only; no framework. Images are kept as uint8 (N, H, W, C): scaling
happens inside the model graph.
"""
