"""Data steps at scale: a WDBC-shaped table generator and the ExampleGen / StatisticsGen / Evaluator bench."""
