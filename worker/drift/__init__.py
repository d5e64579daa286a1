"""Week-over-week drift: aggregates, statistics, the check and its alerts."""
