"""Prevalence from a human-reviewed stratified sample: draw the sample (`design`, `draw`), write
and read the review sheet (`sheet`, `review_page`), and estimate with intervals (`stats`,
`estimate`, `render`). Nothing here imports torch or a model."""
