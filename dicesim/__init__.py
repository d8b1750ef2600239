"""dicesim: predict and measure expert-parallel MoE diffusion transformers on real interconnects.

Importing this package never imports torch; the executor lives in ``validate``.
"""

__version__ = "0.1.0"
