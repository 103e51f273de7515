"""`camexp distill`: students that learn from a teacher's explanation maps (Grad-CAM++ paper §5, poster Tables 3-4).

The CIFAR Wide-ResNets it trains (`wrn_16_2`, `wrn_40_2`, ...) are registered by `camexp.models.wrn`.
"""
