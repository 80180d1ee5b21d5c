"""What every part of the API uses: the settings, the errors (problem+json), the logs and the metrics.
Imports nothing of `api` outside itself."""
