"""Explanation maps: the method registry and its built-in methods, the explainer core, scoring and maps.

Importing any module of this package registers every built-in method: the pure (A, G) methods of
`methods`, the model-calling methods and floors of `model_methods`, the pixel attributions of `attributions`,
TorchRay's methods of `torchray` and `extremal` and the transformer-native attributions of `transformer`.
"""

from camexp.explain import attributions, extremal, methods, model_methods, torchray, transformer  # noqa: F401  (registration)
