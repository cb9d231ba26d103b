"""The analysis of training runs: comparisons, figures and the study report (no torch)."""
