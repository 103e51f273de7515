"""The statistics room, a leaf: pure numpy/torch math that metrics, analyses and reports share and that imports no
camexp module. `bootstrap`: percentile intervals over images, paired differences, sign tests, Krippendorff's α;
`similarity`: Spearman and top-q IoU of two maps by their pixels' ranks; `ap`: average precision."""
