"""`vlmaudit eval`: the UnsafeConcepts protocol (perception, alignment on images and text, the
modality gap) for VLM judges, and top-k / AUROC metrics for scorers."""
