"""`camexp distill`: students that learn from a teacher's explanation maps (Grad-CAM++ paper §5, poster Tables 3-4).

Importing the package registers the CIFAR Wide-ResNets (`wrn_16_2`, `wrn_40_2`, ...) in timm's model registry.
"""

from camexp.distill import wrn as wrn  # noqa: F401  (registers the models)
