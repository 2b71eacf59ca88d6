"""Using a trained model: loading it, metrics, reports, the alarm, detection and export."""
