"""r3: Reflect, Retry, Reward as a reproducible DVC pipeline."""

__version__ = "0.1.0"
