"""Stops a run before training when ExampleValidator found anomalies (tensorflow/tfx-addons#153)."""
