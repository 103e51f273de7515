"""`camexp finetune`: a multi-label head on an ImageNet backbone, trained with BCE on PASCAL VOC."""
