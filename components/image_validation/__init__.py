"""The image gate: every example's image decodes, in an accepted format, size and channel count."""
