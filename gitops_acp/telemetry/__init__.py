"""Metrics (Prometheus) and traces (OpenTelemetry) of DESIGN §11: importable from every layer."""
