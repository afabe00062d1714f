"""Data preparation for training GNER models: readers, regularisation and writers."""
