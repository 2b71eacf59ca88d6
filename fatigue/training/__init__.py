"""Training: the loop, the run's position, stopping on a signal, several processes."""
