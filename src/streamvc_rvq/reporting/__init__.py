"""Files a person reads: the verdict report, its plots, the samples page, the ladder report and the experiments table."""
