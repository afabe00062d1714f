"""The training workflow of GNER models: data preparation, fine-tuning, packaging, evaluation."""
