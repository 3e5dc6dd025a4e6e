"""mammojax: breast-cancer detection on mammograms in JAX/Flax.

Importing the package is cheap on purpose: nothing here imports JAX or
TensorFlow, so ``mammojax --help`` answers at once. Heavy modules are imported
where they are used.
"""

__version__ = "0.1.0"
