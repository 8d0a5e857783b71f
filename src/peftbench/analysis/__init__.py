"""Pure analysis of result records: aggregation, Pareto frontiers, statistics."""
