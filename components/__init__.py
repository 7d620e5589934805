"""Custom TFX components for dxpipe: each is a pure core plus a thin TFX shell."""
