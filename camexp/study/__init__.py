"""The Grad-CAM++ paper's human-trust experiment (§4.2) as a tool: `camexp study make` builds a blind,
self-contained web page of stimuli (two methods' maps per image, sides randomised) and its key;
`camexp study tally` un-blinds the raters' answer files and reports the paper's scores with their statistics.

This package imports the core (config, data, models, explainer); the core never imports it.
"""
