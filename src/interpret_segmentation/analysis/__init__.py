"""What to do with an explanation or a segmentation: metrics, faithfulness scores, image
features and figures. Depends on the core only, so that every method can measure with it."""
