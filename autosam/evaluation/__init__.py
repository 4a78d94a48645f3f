"""Per-case metrics, paired statistics, the comparison report and its figures."""
