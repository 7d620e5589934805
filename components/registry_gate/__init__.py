"""Registry gate: the pure decision whether a registered model version may become a `candidate`."""
