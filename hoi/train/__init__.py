"""Training code behind the jobs/train*.py entry points."""
