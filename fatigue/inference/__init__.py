"""Using a trained model: metrics (metrics.py), loading and scoring checkpoints
(evaluation.py), the evaluation report (report.py), what a deployment needs beside the
weights (deployment.py), the alarm (alarm.py) and live detection (detection.py). The
scripts evaluate.py, detect.py and export.py are their command lines."""
