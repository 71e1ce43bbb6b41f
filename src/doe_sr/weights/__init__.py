"""Readers of pretrained weight files made by other frameworks (PyTorch .pth, ncnn).

Each reader returns plain numpy arrays keyed by the source framework's names, so the
Keras models can load them without importing that framework.
"""
