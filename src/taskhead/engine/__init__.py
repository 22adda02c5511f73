"""The engine: training glue around the transformers Trainer, packing, checkpoints, devices, model
pieces and backbone loading. It knows tensors and models, not workflows: nothing here imports
``taskhead.workflows``."""
