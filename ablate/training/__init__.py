"""What a run is: the typed config whose defaults are Mainrun's baseline, the catalog of
optimizations as patches of it, the data, the model and the training loop (`train.train`, the
one entry point every executor calls). torch is imported here and nowhere else."""
