"""Pure computation on the twin: detectors and grading. No I/O here: readings in, conclusions out."""
