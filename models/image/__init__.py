"""The image model: a small CNN on encoded images, its Trainer `run_fn`, and its TF Serving export."""
