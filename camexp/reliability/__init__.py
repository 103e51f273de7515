"""Metric reliability (`camexp report reliability RESULTS`): do a run's metrics agree enough to rank methods?

From the records alone (no forward): per metric the methods' ranks (by mean and by median over images), the
mean rank per criterion (faithfulness, localization, complexity, randomisation, robustness, composite), each
method's spread of ranks across metrics (σ̂, LATEC), Kendall's τ between every two metrics' per-image rankings
of the methods, and Krippendorff's α (ordinal) per metric with images as raters and methods as units (Tomsett
et al. 2020); every number with a percentile bootstrap interval over images. `measures` holds the math,
`report` reads run folders and writes the tables and figures.
"""
