"""Row-level data checks in pure Python: schema violations with line numbers, identifier and leakage guards."""
