"""loadgrid: benchmark model-serving stacks over a grid of replicas x users x spawn rate."""

__version__ = "0.1.0"
