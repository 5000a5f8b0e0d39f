"""Where jobs run: Ray start-up, runtime environment and storage settings."""
