"""Pure computation: joint counts, metrics, statistics, evaluation and the gate decision."""
