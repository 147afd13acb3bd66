"""Event-time features: per-card windows, per-terminal delayed-label risk, shared by every path."""
